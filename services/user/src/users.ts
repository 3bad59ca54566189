import { AppError, createViolations } from "@coinmesh/lib/errors";
import { decodePageToken, encodePageToken, pageSize } from "@coinmesh/lib/paging";

export interface User {
  id: string;
  email: string;
  displayName: string;
  createTime: Date;
  updateTime: Date;
}

export interface UserChanges {
  email?: string;
  displayName?: string;
}

/** Storage of users; declared here, implemented in users-repository.ts. */
export interface UsersRepository {
  /** Throws AppError already_exists when the email is taken. */
  insert(user: User): Promise<void>;
  get(id: string): Promise<User | undefined>;
  /** Users with id greater than afterId, in id order. */
  list(afterId: string | undefined, limit: number): Promise<User[]>;
  /** Applies changes; undefined when no such user. Throws already_exists on a taken email. */
  update(id: string, changes: UserChanges, now: Date): Promise<User | undefined>;
}

export interface UsersDeps {
  repo: UsersRepository;
  clock: () => Date;
  newId: () => string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Deliberately simple: one @, no spaces, a dot in the domain. Deliverability is not provable here.
const EMAIL = /^[^\s@]+@[^\s@.]+(\.[^\s@.]+)+$/;
const MAX_EMAIL = 254;
const MAX_DISPLAY_NAME = 100;
export const UPDATABLE_PATHS = ["email", "display_name"] as const;

type Violations = ReturnType<typeof createViolations>;

function normalizeEmail(raw: string, field: string, violations: Violations): string {
  const email = raw.trim().toLowerCase();
  if (email === "") violations.add(field, "is required");
  else if (email.length > MAX_EMAIL)
    violations.add(field, `must be at most ${MAX_EMAIL} characters`);
  else if (!EMAIL.test(email)) violations.add(field, "is not a valid email address");
  return email;
}

function normalizeDisplayName(raw: string, field: string, violations: Violations): string {
  const name = raw.trim();
  const length = [...name].length;
  if (length === 0) violations.add(field, "is required");
  else if (length > MAX_DISPLAY_NAME) {
    violations.add(field, `must be at most ${MAX_DISPLAY_NAME} characters`);
  }
  return name;
}

export function checkUserId(id: string, field: string, violations: Violations): void {
  if (id === "") violations.add(field, "is required");
  else if (!UUID.test(id)) violations.add(field, "must be a UUID");
}

export function createUsers({ repo, clock, newId }: UsersDeps) {
  return {
    async createUser(input: { email: string; displayName: string }): Promise<User> {
      const violations = createViolations();
      const email = normalizeEmail(input.email, "email", violations);
      const displayName = normalizeDisplayName(input.displayName, "display_name", violations);
      violations.throwIfAny();
      const now = clock();
      const user = { id: newId(), email, displayName, createTime: now, updateTime: now };
      await repo.insert(user);
      return user;
    },

    async getUser(id: string): Promise<User> {
      const violations = createViolations();
      checkUserId(id, "id", violations);
      violations.throwIfAny();
      const user = await repo.get(id.toLowerCase());
      if (!user) throw new AppError("not_found", `user ${id} not found`);
      return user;
    },

    async listUsers(input: { pageSize: number; pageToken: string }) {
      const violations = createViolations();
      const limit = pageSize(input.pageSize, violations);
      const after = decodePageToken(input.pageToken, "users", violations);
      if (after && !UUID.test(after[0] ?? "")) violations.add("page_token", "is malformed");
      violations.throwIfAny();
      // One extra row tells whether another page exists without a second query.
      const rows = await repo.list(after?.[0], limit + 1);
      const users = rows.slice(0, limit);
      const last = users.at(-1);
      const nextPageToken = rows.length > limit && last ? encodePageToken("users", [last.id]) : "";
      return { users, nextPageToken };
    },

    async updateUser(input: { id: string; paths: string[]; email: string; displayName: string }) {
      const violations = createViolations();
      checkUserId(input.id, "user.id", violations);
      const changes: UserChanges = {};
      for (const path of input.paths) {
        if (path === "email") changes.email = normalizeEmail(input.email, "user.email", violations);
        else if (path === "display_name") {
          changes.displayName = normalizeDisplayName(
            input.displayName,
            "user.display_name",
            violations,
          );
        } else {
          violations.add(
            "update_mask.paths",
            `unknown path ${JSON.stringify(path)}; updatable: ${UPDATABLE_PATHS.join(", ")}`,
          );
        }
      }
      violations.throwIfAny();
      const id = input.id.toLowerCase();
      const user =
        Object.keys(changes).length === 0
          ? await repo.get(id)
          : await repo.update(id, changes, clock());
      if (!user) throw new AppError("not_found", `user ${input.id} not found`);
      return user;
    },
  };
}

export type Users = ReturnType<typeof createUsers>;
