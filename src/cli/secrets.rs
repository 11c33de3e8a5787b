//! `ballast secrets`: secrets at rest (see `ballast::keyring`). `rotate-key` re-seals every
//! stored secret under the first key of BALLAST_SECRETS_KEYRING; a dry run unless --execute;
//! audited.

use ballast::state::AppState;
use clap::Subcommand;

use super::args::actor;

#[derive(Debug, Subcommand)]
pub(super) enum SecretsCommand {
    /// Re-seal every webhook signing secret under the keyring's first key (put the new key
    /// first in BALLAST_SECRETS_KEYRING, keep the old ones listed, run this with --execute,
    /// then drop the old keys). Also seals secrets stored before sealing existed. Without
    /// --execute, only counts what it would change.
    RotateKey {
        /// Re-seal; without it, a dry run that changes nothing.
        #[arg(long)]
        execute: bool,
    },
}

pub(super) async fn secrets(state: AppState, command: SecretsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        SecretsCommand::RotateKey { execute } => {
            let keyring = &state.settings.secrets_keyring;
            let report = ballast::webhooks_out::endpoints::reseal_all(&state.system_pool, keyring, execute).await?;
            let mut tx = state.system_pool.0.begin().await?;
            let outcome = if report.unreadable.is_empty() { ballast::audit::Outcome::Ok } else { ballast::audit::Outcome::Failed };
            let params = serde_json::json!({"execute": execute, "key": keyring.current(), "report": report});
            ballast::audit::record(&mut tx, None, &actor(), "secrets.rotate_key", params, outcome).await?;
            tx.commit().await?;
            if json {
                let mut shown = serde_json::to_value(&report)?;
                shown["executed"] = execute.into();
                shown["key"] = keyring.current().into();
                println!("{shown}");
            } else {
                let verb = if execute { "re-sealed" } else { "would re-seal (dry run; --execute to do it)" };
                println!(
                    "{} endpoints; {} secrets not under key `{}`: {verb} {}",
                    report.endpoints,
                    report.to_reseal,
                    keyring.current(),
                    if execute { report.resealed } else { report.to_reseal }
                );
            }
            if !report.unreadable.is_empty() {
                let ids: Vec<String> = report.unreadable.iter().map(ToString::to_string).collect();
                anyhow::bail!(
                    "{} endpoints have a secret no listed key opens ({}): list the key they were sealed with in BALLAST_SECRETS_KEYRING and run again",
                    ids.len(),
                    ids.join(", ")
                );
            }
            if keyring.is_development() {
                eprintln!("ballast: the current key is the development key: set BALLAST_SECRETS_KEYRING in production");
            }
            Ok(())
        }
    }
}
