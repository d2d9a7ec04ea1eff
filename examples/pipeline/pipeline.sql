-- The table pipe_save_rows writes (db.c creates the same one in SQLite).
CREATE TABLE IF NOT EXISTS files (
  id    bigint PRIMARY KEY,
  name  text   NOT NULL UNIQUE,
  url   text   NOT NULL,
  bytes bigint NOT NULL CHECK (bytes >= 0)
);
