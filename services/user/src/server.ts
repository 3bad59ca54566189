import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceHandlers } from "@coinmesh/lib/grpc-service";
import type { UserService } from "@coinmesh/proto/user/v1/user_pb";
import type { User, Users } from "./users.ts";

const toProto = (user: User) => ({
  id: user.id,
  email: user.email,
  displayName: user.displayName,
  createTime: timestampFromDate(user.createTime),
  updateTime: timestampFromDate(user.updateTime),
});

export function userHandlers(users: Users): ServiceHandlers<typeof UserService> {
  return {
    createUser: async (req) => ({ user: toProto(await users.createUser(req)) }),
    getUser: async (req) => ({ user: toProto(await users.getUser(req.id)) }),
    async listUsers(req) {
      const page = await users.listUsers(req);
      return { users: page.users.map(toProto), nextPageToken: page.nextPageToken };
    },
    updateUser: async (req) => ({
      user: toProto(
        await users.updateUser({
          id: req.user?.id ?? "",
          email: req.user?.email ?? "",
          displayName: req.user?.displayName ?? "",
          paths: req.updateMask?.paths ?? [],
        }),
      ),
    }),
  };
}
