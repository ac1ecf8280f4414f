/* Pending in the sandbox: the demo applies everything before it. */
exports.up = (pgm) => {
  pgm.createTable('applicant_status', {
    id: 'serial',
    applicant_id: { type: 'integer', notNull: true }, // applicants.id (serial, no primary key in the seed's table)
    employer_id: { type: 'integer' },
    status: { type: 'varchar(32)', notNull: true, default: 'open' },
    created_at: { type: 'timestamp with time zone', default: pgm.func('now()') },
  });
  pgm.createIndex('applicant_status', ['applicant_id', 'status']);
};

exports.down = (pgm) => {
  pgm.dropTable('applicant_status');
};
