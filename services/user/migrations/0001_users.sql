CREATE TABLE users (
  id uuid PRIMARY KEY,
  email text NOT NULL,
  display_name text NOT NULL,
  create_time timestamptz NOT NULL,
  update_time timestamptz NOT NULL
);

-- Emails are stored lower-cased; the index on lower() still guards any writer that forgets.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
