-- The compose file's database, owned by the migration role (deploy/dev.sh creates its own).
CREATE DATABASE ballast OWNER ballast_owner;
