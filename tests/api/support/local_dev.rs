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
    /// Where the local Stripe keeps its state across restarts (as `dev.sh up` has it).
    state: tempfile::TempDir,
    stripe_port: u16,
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
        let state = tempfile::tempdir().expect("state folder");
        let mail_listen = format!("127.0.0.1:{mail_port}");
        let children = vec![
            Self::spawn(&app, &["dev", "mail", "serve", "--listen", &mail_listen, "--dir", &mail.path().display().to_string()]),
            Self::spawn_stripe(&app, stripe_port, state.path()),
        ];
        until("the local Stripe and the mail catcher listen", Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", stripe_port)).await.is_ok() && tokio::net::TcpStream::connect(("127.0.0.1", mail_port)).await.is_ok()
        })
        .await;
        LocalDev { app, mail, state, stripe_port, _children: children }
    }

    fn spawn(app: &TestApp, args: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast"))
            .args(args)
            .env_clear()
            .envs(&app.env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .kill_on_drop(true)
            .spawn()
            .expect("ballast dev")
    }

    fn spawn_stripe(app: &TestApp, port: u16, state: &std::path::Path) -> tokio::process::Child {
        let listen = format!("127.0.0.1:{port}");
        let file = state.join("dev-stripe.json").display().to_string();
        Self::spawn(app, &["dev", "stripe", "serve", "--listen", &listen, "--webhook-url", &app.url("/webhooks/stripe"), "--state", &file])
    }

    /// Stops the local Stripe as Ctrl-C does and starts it again on the same port and state.
    pub async fn restart_stripe(&mut self) {
        let child = &mut self._children[1];
        let pid = child.id().expect("running").to_string();
        let _ = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await;
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("the local Stripe stops").expect("exit");
        self._children[1] = Self::spawn_stripe(&self.app, self.stripe_port, self.state.path());
        let port = self.stripe_port;
        until("the local Stripe listens again", Duration::from_secs(30), || async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() }).await;
    }

    /// Whether the local Stripe process still runs.
    pub fn stripe_running(&mut self) -> bool {
        self._children[1].try_wait().ok().flatten().is_none()
    }
}
