//! A fleet beside `ballast dev stripe serve` and `ballast dev mail serve` run as processes, as
//! `./deploy/dev.sh up` starts them: what a newcomer's walk runs against.

use std::time::Duration;

use super::TestApp;
use super::procs::{free_port, until};

/// The fleet and its local Stripe and mail catcher (stopped when dropped).
pub struct LocalDev {
    pub app: TestApp,
    /// The folder the mail catcher writes each message to.
    pub mail: tempfile::TempDir,
    _children: Vec<tokio::process::Child>,
}

impl LocalDev {
    /// Starts the three and waits until both local servers listen.
    pub async fn start() -> LocalDev {
        let (stripe_port, mail_port) = (free_port(), free_port());
        let app = TestApp::builder()
            .env("STRIPE_API_BASE", &format!("http://127.0.0.1:{stripe_port}/"))
            .env("BALLAST_SMTP_HOST", "127.0.0.1")
            .env("BALLAST_SMTP_PORT", &mail_port.to_string())
            .env("BALLAST_SMTP_SECURITY", "none")
            .spawn()
            .await;
        let mail = tempfile::tempdir().expect("mail folder");
        let spawn = |args: &[&str]| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast"))
                .args(args)
                .env_clear()
                .envs(&app.env)
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .kill_on_drop(true)
                .spawn()
                .expect("ballast dev")
        };
        let mail_listen = format!("127.0.0.1:{mail_port}");
        let stripe_listen = format!("127.0.0.1:{stripe_port}");
        let children = vec![
            spawn(&["dev", "mail", "serve", "--listen", &mail_listen, "--dir", &mail.path().display().to_string()]),
            spawn(&["dev", "stripe", "serve", "--listen", &stripe_listen, "--webhook-url", &app.url("/webhooks/stripe")]),
        ];
        until("the local Stripe and the mail catcher listen", Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", stripe_port)).await.is_ok() && tokio::net::TcpStream::connect(("127.0.0.1", mail_port)).await.is_ok()
        })
        .await;
        LocalDev { app, mail, _children: children }
    }

    /// Whether the local Stripe process still runs.
    pub fn stripe_running(&mut self) -> bool {
        self._children[1].try_wait().ok().flatten().is_none()
    }
}
