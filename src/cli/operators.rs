//! `ballast operators`: the people who run Ballast — added with a role (the token shown once),
//! listed, disabled and given a new token; admins only (or a local shell with the database's
//! credentials), audited.

use ballast::auth::operators::{self, Role};
use ballast::state::AppState;
use clap::Subcommand;

use super::args::{actor, require};

#[derive(Debug, Subcommand)]
pub(super) enum OperatorsCommand {
    /// Add an operator and print its token once (only its hash is stored). Viewers read
    /// (lists, timelines, reports, dry runs); operators also act (execute runbooks and bulk
    /// operations, set overrides, open support sessions); admins also manage operators.
    Add {
        /// A short lowercase handle (a-z, 0-9, '.', '_', '@', '-'): every audit row names it.
        name: String,
        /// viewer, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List operators (never their tokens), by name.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Disable an operator: its token stops working at once (`rotate` enables it again).
    Disable {
        /// The operator's name.
        name: String,
    },
    /// Replace an operator's token (the old one stops working at once) and print the new one.
    Rotate {
        /// The operator's name.
        name: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role: viewer, operator or admin"))
}

pub(super) async fn operators_command(state: AppState, command: OperatorsCommand, json: bool) -> anyhow::Result<()> {
    let pool = &state.system_pool;
    let shown_once = |op: &operators::Operator, token: &str, what: &str| -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::json!({"operator": op, "token": token}));
        } else {
            println!("{token}");
            eprintln!("{what} operator {} ({}). The token is shown once; only its hash is stored. Set BALLAST_OPERATOR_TOKEN to it in the operator's shell.", op.name, op.role.0.as_str());
        }
        Ok(())
    };
    match command {
        OperatorsCommand::Add { name, role } => {
            require(Role::Admin)?;
            let (op, token) = operators::add(pool, &name, role, &actor()).await?;
            shown_once(&op, &token, "added")?;
        }
        OperatorsCommand::List { limit } => {
            let mut rows = operators::list(pool).await?;
            let total = rows.len();
            rows.truncate(limit);
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                let cells = rows.iter().map(|o| {
                    let state = if o.disabled_at.is_some() { "disabled" } else { "active" };
                    vec![o.name.clone(), o.role.0.as_str().into(), state.into(), format!("bo_{}_…", o.token_prefix), o.created_by.clone(), o.created_at.format("%Y-%m-%d %H:%M").to_string()]
                });
                println!("{}", super::render::table(&["name", "role", "state", "token", "added by", "added"], cells));
                if let Some(note) = super::render::more(rows.len(), total) {
                    println!("{note}");
                }
            }
        }
        OperatorsCommand::Disable { name } => {
            require(Role::Admin)?;
            let op = operators::disable(pool, &name, &actor()).await?;
            if json {
                println!("{}", serde_json::to_string(&op)?);
            } else {
                println!("operator {} disabled: its token no longer works", op.name);
            }
        }
        OperatorsCommand::Rotate { name } => {
            require(Role::Admin)?;
            let (op, token) = operators::rotate(pool, &name, &actor()).await?;
            shown_once(&op, &token, "new token for")?;
        }
    }
    Ok(())
}
