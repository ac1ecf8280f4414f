/* Created with --migration-filename-format utc: 2020-09-15 17:30:00.000 UTC */
exports.up = (pgm) => {
  pgm.createTable('employer_sites', {
    id: 'serial',
    site_id: { type: 'integer', notNull: true, unique: true },
    body: { type: 'jsonb', notNull: true },
    created_at: { type: 'timestamp with time zone', default: pgm.func('now()') },
    updated_at: { type: 'timestamp with time zone' },
  });
};

exports.down = (pgm) => {
  pgm.dropTable('employer_sites');
};
