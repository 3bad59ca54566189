import { AppError } from "@coinmesh/lib/errors";
import { type Queryable, sqlState } from "@coinmesh/lib/postgres";
import type { User, UserChanges, UsersRepository } from "./users.ts";

const UNIQUE_VIOLATION = "23505";
const COLUMNS = "id, email, display_name, create_time, update_time";

interface UserRow {
  id: string;
  email: string;
  display_name: string;
  create_time: Date;
  update_time: Date;
}

function toUser(row: UserRow): User {
  return {
    id: row.id,
    email: row.email,
    displayName: row.display_name,
    createTime: row.create_time,
    updateTime: row.update_time,
  };
}

function emailTaken(err: unknown, email: string | undefined): unknown {
  return sqlState(err) === UNIQUE_VIOLATION
    ? new AppError("already_exists", `a user with email ${email} already exists`, {
        reason: "EMAIL_TAKEN",
        metadata: { email: email ?? "" },
      })
    : err;
}

export function createUsersRepository(db: Queryable): UsersRepository {
  return {
    async insert(user) {
      try {
        await db.query(`INSERT INTO users (${COLUMNS}) VALUES ($1, $2, $3, $4, $5)`, [
          user.id,
          user.email,
          user.displayName,
          user.createTime,
          user.updateTime,
        ]);
      } catch (err) {
        throw emailTaken(err, user.email);
      }
    },

    async get(id) {
      const { rows } = await db.query<UserRow>(`SELECT ${COLUMNS} FROM users WHERE id = $1`, [id]);
      return rows[0] && toUser(rows[0]);
    },

    async list(afterId, limit) {
      const { rows } = await db.query<UserRow>(
        `SELECT ${COLUMNS} FROM users WHERE $1::uuid IS NULL OR id > $1::uuid ORDER BY id LIMIT $2`,
        [afterId ?? null, limit],
      );
      return rows.map(toUser);
    },

    async update(id, changes: UserChanges, now) {
      try {
        const { rows } = await db.query<UserRow>(
          `UPDATE users SET
             email = coalesce($2, email),
             display_name = coalesce($3, display_name),
             update_time = $4
           WHERE id = $1 RETURNING ${COLUMNS}`,
          [id, changes.email ?? null, changes.displayName ?? null, now],
        );
        return rows[0] && toUser(rows[0]);
      } catch (err) {
        throw emailTaken(err, changes.email);
      }
    },
  };
}
