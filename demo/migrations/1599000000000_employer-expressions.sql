-- Up Migration
CREATE TABLE employer_expressions (
  id serial PRIMARY KEY,
  body jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz
);
CREATE INDEX employer_expressions_created_at ON employer_expressions (created_at);

-- Down Migration
DROP TABLE employer_expressions;
