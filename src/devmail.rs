//! A mail catcher: a real SMTP server on loopback that speaks the protocol lettre speaks
//! (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and keeps every message it accepts — in memory,
//! and, for `ballast dev mail serve`, as one `.eml` file each in a folder. The tests use it
//! too: it can answer with a chosen failure, and be taken down and brought back on its port.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// A message as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope's recipients.
    pub to: Vec<String>,
    /// Headers and body, as sent.
    pub data: String,
}

impl Received {
    /// The first header `name` (any case), unfolded no further than its line.
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = name.to_ascii_lowercase() + ":";
        self.data.lines().find(|l| l.to_ascii_lowercase().starts_with(&prefix)).map(|l| l[prefix.len()..].trim().to_owned())
    }
}

/// The messages a catcher kept in `dir` (`.eml` files), oldest first, with their file names.
pub fn read_folder(dir: &std::path::Path) -> std::io::Result<Vec<(std::path::PathBuf, Received)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "eml") {
            let data = std::fs::read_to_string(&path)?;
            let to = Received { to: Vec::new(), data: data.clone() }.header("To").into_iter().collect();
            out.push((path, Received { to, data }));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[derive(Default)]
struct Inner {
    messages: Vec<Received>,
    /// Where each accepted message is also written, as `{n}.eml`.
    folder: Option<std::path::PathBuf>,
    /// Answer to DATA's end instead of 250 (e.g. "451 try later", "550 no such user").
    reject_with: Option<String>,
    /// The number the last file written had: a restarted catcher continues after the folder's
    /// highest, so mail caught before a restart is never overwritten.
    last_number: usize,
}

/// The highest `NNNN.eml` number in `folder` (0 when none or no folder).
fn highest_number(folder: &std::path::Path) -> usize {
    std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.path().file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<usize>().ok()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The server.
#[derive(Clone)]
pub struct SmtpServer {
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    stop: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

impl SmtpServer {
    /// A catcher on a free loopback port, for a test.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        Self::on(listener, None).expect("addr")
    }

    /// A catcher on `listener`, writing each message into `folder` when given.
    pub fn on(listener: TcpListener, folder: Option<std::path::PathBuf>) -> std::io::Result<SmtpServer> {
        let port = listener.local_addr()?.port();
        let server = SmtpServer { inner: Arc::default(), arrived: Arc::default(), port, stop: Arc::default(), alive: Arc::default() };
        {
            let mut inner = lock(&server.inner);
            inner.last_number = folder.as_deref().map_or(0, highest_number);
            inner.folder = folder;
        }
        server.serve(listener);
        Ok(server)
    }

    fn serve(&self, listener: TcpListener) {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        *self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        self.alive.store(true, std::sync::atomic::Ordering::SeqCst);
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => return,
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { return };
                        let me = me.clone();
                        tokio::spawn(async move { me.session(socket).await });
                    }
                }
            }
        });
    }

    /// Stops listening (connection refused until `up`).
    pub fn down(&self) {
        self.alive.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(tx) = self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = tx.send(());
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("rebind smtp");
        self.serve(listener);
    }

    /// Answers the end of DATA with `reply` ("451 try later", "550 no such user") instead of
    /// accepting; `None` accepts again.
    pub fn reject_with(&self, reply: Option<&str>) {
        lock(&self.inner).reject_with = reply.map(str::to_owned);
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.inner).messages.clone()
    }

    /// Waits (event-driven, bounded) until at least `n` messages arrived.
    pub async fn wait_for(&self, n: usize, limit: std::time::Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.arrived.notified();
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("only {} of {n} emails arrived: {:?}", got.len(), got.iter().map(|m| m.header("subject")).collect::<Vec<_>>());
            }
        }
    }

    /// Keeps an accepted message; in the folder too, and says so on stdout (the catcher's
    /// log for a person running it).
    fn keep(&self, message: Received) {
        let mut inner = lock(&self.inner);
        if let Some(folder) = inner.folder.clone() {
            inner.last_number += 1;
            let path = folder.join(format!("{:04}.eml", inner.last_number));
            let write = |path: &std::path::Path| {
                use std::io::Write;
                std::fs::create_dir_all(&folder)?;
                // create_new: an existing file is never overwritten, whoever wrote it.
                std::fs::OpenOptions::new().write(true).create_new(true).open(path)?.write_all(message.data.as_bytes())
            };
            match write(&path) {
                Ok(()) => println!("mail to {} — {} — {}", message.to.join(", "), message.header("subject").unwrap_or_default(), path.display()),
                Err(e) => eprintln!("mail to {} not written to {}: {e}", message.to.join(", "), path.display()),
            }
        }
        inner.messages.push(message);
    }

    async fn session(&self, socket: tokio::net::TcpStream) {
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        let _ = write.write_all(b"220 ballast ESMTP\r\n").await;
        let mut to = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if !self.alive.load(std::sync::atomic::Ordering::SeqCst) {
                return; // taken down: drop open connections too
            }
            let upper = line.to_ascii_uppercase();
            let reply: String = if upper.starts_with("EHLO") {
                "250-ballast\r\n250 8BITMIME".into()
            } else if upper.starts_with("HELO") || upper.starts_with("MAIL FROM") || upper.starts_with("NOOP") {
                "250 OK".into()
            } else if upper.starts_with("RSET") {
                to.clear();
                "250 OK".into()
            } else if upper.starts_with("RCPT TO") {
                match recipient(&line) {
                    Some(address) => {
                        to.push(address);
                        "250 OK".into()
                    }
                    None => "501 5.5.4 Syntax: RCPT TO:<address>".into(),
                }
            } else if upper == "DATA" {
                let _ = write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await;
                let mut data = String::new();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l == "." {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').filter(|_| l.starts_with("..")).unwrap_or(&l));
                    data.push('\n');
                }
                let reject = lock(&self.inner).reject_with.clone();
                match reject {
                    Some(r) => r,
                    None => {
                        let message = Received { to: std::mem::take(&mut to), data };
                        self.keep(message);
                        self.arrived.notify_waiters();
                        "250 OK queued".into()
                    }
                }
            } else if upper.starts_with("QUIT") {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            } else {
                "502 command not implemented".into()
            };
            if write.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// The address of a `RCPT TO:<address>` line (RFC 5321 4.1.1.3), or `None` when the line is
/// not one: a bare `RCPT TO`, no colon, an empty or unbracketed path.
fn recipient(line: &str) -> Option<String> {
    let rest = line.get("RCPT TO".len()..)?.trim_start().strip_prefix(':')?.trim();
    let path = rest.split_whitespace().next()?; // ESMTP parameters may follow
    let address = path.strip_prefix('<')?.strip_suffix('>')?;
    (!address.is_empty() && !address.contains(['<', '>'])).then(|| address.to_owned())
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_malformed_recipient_line_is_no_recipient() {
        assert_eq!(super::recipient("RCPT TO:<a@b.test>").as_deref(), Some("a@b.test"));
        assert_eq!(super::recipient("rcpt to: <a@b.test> NOTIFY=NEVER").as_deref(), Some("a@b.test"));
        for bad in ["RCPT TO", "RCPT TO:", "RCPT TO:<>", "RCPT TO a@b.test", "RCPT TO:a@b.test", "RCPT TO:<a@b.test", "RCPT TOé"] {
            assert_eq!(super::recipient(bad), None, "{bad:?}");
        }
    }
}
