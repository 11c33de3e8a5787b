//! Settings of backups and restore rehearsals: logical dumps (pg_dump) and, where the database
//! archives its WAL through pgBackRest, physical backups restorable to a point in time.

use std::path::PathBuf;

use secrecy::SecretString;

use super::{ConfigError, Source};

/// Where backups go and how they are rehearsed.
#[derive(Debug, Clone)]
pub struct Backups {
    /// Where `db.backup` writes its dumps (`BALLAST_BACKUP_DIR`); unset: no dumps (and their
    /// alert stays quiet: set it in production).
    pub dir: Option<PathBuf>,
    /// How many dumps `db.backup` keeps (`BALLAST_BACKUP_KEEP`, 7).
    pub keep: u32,
    /// A scratch database `db.restore_rehearsal` restores the newest dump into, emptied before
    /// and after (`BALLAST_REHEARSAL_DATABASE_URL`: never the production database).
    pub rehearsal_database_url: Option<SecretString>,
    /// pgBackRest, when the database archives its WAL through it.
    pub pgbackrest: Option<Pgbackrest>,
}

/// A pgBackRest stanza this member can back up and restore from.
#[derive(Debug, Clone)]
pub struct Pgbackrest {
    /// The stanza (`BALLAST_PGBACKREST_STANZA`; set: physical backups and point-in-time
    /// rehearsals are on).
    pub stanza: String,
    /// Its configuration file (`BALLAST_PGBACKREST_CONFIG`; unset: pgBackRest's own default,
    /// /etc/pgbackrest/pgbackrest.conf).
    pub config: Option<PathBuf>,
    /// Where a point-in-time rehearsal restores a scratch instance
    /// (`BALLAST_PGBACKREST_SCRATCH_DIR`; unset: the system's temporary directory). It needs
    /// room for a copy of the database; it is removed after each rehearsal.
    pub scratch_dir: Option<PathBuf>,
}

impl Backups {
    pub(super) fn parse(src: &Source) -> Result<Self, ConfigError> {
        let stanza = src.get("BALLAST_PGBACKREST_STANZA").map(str::trim).filter(|s| !s.is_empty());
        if let Some(s) = stanza {
            if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(ConfigError::new("BALLAST_PGBACKREST_STANZA", "a stanza name: letters, digits, '-' and '_'"));
            }
        }
        let pgbackrest = stanza.map(|s| Pgbackrest {
            stanza: s.to_owned(),
            config: src.get("BALLAST_PGBACKREST_CONFIG").map(PathBuf::from),
            scratch_dir: src.get("BALLAST_PGBACKREST_SCRATCH_DIR").map(PathBuf::from),
        });
        Ok(Self {
            dir: src.get("BALLAST_BACKUP_DIR").map(PathBuf::from),
            keep: src.parse_or("BALLAST_BACKUP_KEEP", 7, "a number of dumps")?,
            rehearsal_database_url: super::optional_url(src, "BALLAST_REHEARSAL_DATABASE_URL", &["postgres", "postgresql"])?,
            pgbackrest,
        })
    }
}
