import { randomUUID } from "node:crypto";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";

/**
 * Creates users through the user service and funds each through AccountService.Deposit, a few
 * at a time, so that no benchmark order fails for lack of money (or contends on one account).
 */
export async function createFundedUsers(
  userAddress: string,
  orderAddress: string,
  count: number,
  deposits: Record<string, string> = { USD: "1000000000" },
): Promise<string[]> {
  const users = createServiceClient(UserService, userAddress, { defaultTimeoutMs: 10_000 });
  const accounts = createServiceClient(AccountService, orderAddress, { defaultTimeoutMs: 10_000 });
  const run = randomUUID().slice(0, 8);
  const ids: string[] = [];
  try {
    for (let start = 0; start < count; start += 20) {
      const batch = Array.from({ length: Math.min(20, count - start) }, (_, i) => start + i);
      ids.push(
        ...(await Promise.all(
          batch.map(async (n) => {
            const { user } = await users.client.createUser({
              email: `bench-${run}-${n}@example.com`,
              displayName: `Bench ${n}`,
            });
            const id = user?.id ?? "";
            for (const [currency, amount] of Object.entries(deposits)) {
              await accounts.client.deposit({
                userId: id,
                currency,
                amount,
                idempotencyKey: `bench-funding-${currency}`,
              });
            }
            return id;
          }),
        )),
      );
    }
    return ids;
  } finally {
    users.close();
    accounts.close();
  }
}
