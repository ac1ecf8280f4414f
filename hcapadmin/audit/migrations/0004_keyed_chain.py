"""The keyed chain: each event stores the id of the HCAPADMIN_AUDIT_KEY
entry that made its hash, and the checkpoint is signed with the audit key.

Events already in the table keep plain SHA-256 hashes and get key id
``unkeyed`` (a column default, so no row is updated and the append-only
triggers are not involved); ``audit_verify`` accepts them only before the
first keyed event and reports how many there are.  An existing checkpoint is
signed with the current key (it was computed before this migration)."""

from django.db import migrations, models


def sign_checkpoints(apps, schema_editor):
    from hcapadmin.audit.models import audit_keys, checkpoint_mac

    key_id, key = next(iter(audit_keys().items()))
    Checkpoint = apps.get_model("audit", "AuditCheckpoint")
    for cp in Checkpoint.objects.all():
        cp.key_id = key_id
        cp.mac = checkpoint_mac(key, cp.last_id, cp.last_hash, cp.events, cp.ok, cp.bad_id)
        cp.save(update_fields=["key_id", "mac"])


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_append_only_trigger")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="key_id",
            field=models.CharField(db_default="unkeyed", max_length=32),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="key_id",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="mac",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.RunPython(sign_checkpoints, migrations.RunPython.noop),
    ]
