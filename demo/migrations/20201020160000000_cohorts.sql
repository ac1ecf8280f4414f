-- Pending in the sandbox (17-digit utc name: 2020-10-20 16:00:00.000 UTC)
-- Up Migration
CREATE TABLE cohorts (
  id serial PRIMARY KEY,
  cohort_name varchar(255) NOT NULL,
  start_date date NOT NULL,
  end_date date NOT NULL,
  cohort_size integer NOT NULL CHECK (cohort_size > 0),
  psi_id integer
);

-- Down Migration
DROP TABLE cohorts;
