-- Up Migration
CREATE INDEX applicants_search_idx ON applicants USING gin (search);
CREATE INDEX applicants_body_email_idx ON applicants ((body->>'emailAddress'));

-- Down Migration
DROP INDEX applicants_body_email_idx;
DROP INDEX applicants_search_idx;
