"""One file per schema version, applied in order by bastion.gateway.store.migrate.upgrade."""
