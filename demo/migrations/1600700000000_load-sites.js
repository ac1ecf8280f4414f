/* Loads the initial site list from assets/sites.csv (a data file, not a migration). */
const fs = require('fs');
const path = require('path');

const literal = (value) => `'${String(value).replace(/'/g, "''")}'`;

exports.up = (pgm) => {
  const csv = fs.readFileSync(path.join(__dirname, 'assets', 'sites.csv'), 'utf8');
  const [, ...lines] = csv.trim().split('\n');
  lines.forEach((line) => {
    const [siteId, siteName, healthAuthority, allocation] = line.split(',');
    const body = JSON.stringify({ siteName, healthAuthority, allocation: Number(allocation) });
    pgm.sql(`INSERT INTO employer_sites (site_id, body) VALUES (${Number(siteId)}, ${literal(body)}::jsonb)`);
  });
};

exports.down = (pgm) => {
  pgm.sql('DELETE FROM employer_sites');
};
