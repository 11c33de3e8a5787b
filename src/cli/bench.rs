//! `ballast bench`: benchmarks (release build; figures for docs/performance.md, never a timed test).

use ballast::config::Settings;
use clap::Subcommand;
use ballast::perf::bench::jobs::BenchParams;
use ballast::perf::bench::webhooks::WebhookBenchParams;


#[derive(Debug, Subcommand)]
pub(super) enum BenchCommand {
    /// No-op job throughput and pickup latency on the configured Redis (a private namespace),
    /// following the BullMQ peer's protocol.
    Jobs {
        /// Jobs in the backlog phase.
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        /// Worker concurrency.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Enqueue rate of the pickup phase (jobs/s).
        #[arg(long, default_value_t = 500)]
        pickup_rate: u32,
        /// Length of the pickup phase (s).
        #[arg(long, default_value_t = 5)]
        pickup_secs: u32,
    },
    /// Outbound webhook deliveries to a receiver on loopback in this process: deliveries per
    /// second draining a backlog, then acceptance-to-receipt latency at a fixed rate. Uses the
    /// configured PostgreSQL (its own tenant, deleted afterwards) and a private Redis namespace.
    Deliveries {
        /// Deliveries in the throughput phase.
        #[arg(long, default_value_t = 20_000)]
        n: u64,
        /// Worker concurrency.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Messages per second in the latency phase (open loop).
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        /// Seconds of the latency phase.
        #[arg(long, default_value_t = 10)]
        secs: u32,
    },
    /// Usage intake in batches of 100 (events/s, latency) and the flush of many counters.
    Usage {
        /// Seconds of posting.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Concurrent senders.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Counters to flush.
        #[arg(long, default_value_t = 100_000)]
        counters: u64,
    },
    /// The hot statements at a large SaaS's volume, in a scratch database of its own (created
    /// by the owner role, `BALLAST_OWNER_DATABASE_URL`, and dropped afterwards) and a private
    /// Redis namespace: p50 and p99 of the webhook claim, the entitlement read (hit and miss),
    /// `GET /v1/tenants`, the admin list and a timeline, each plan checked for whole-table
    /// reads; retiring one month of the audit log, the inbox, the outbound deliveries, their
    /// attempts and messages, the email outbox and job statuses (time, the detach's lock, a writer's
    /// slowest insert meanwhile); size on disk per million rows. The inbox and the ledger get a
    /// partition per month loaded, as a database that old has. The volume (100,000
    /// tenants, 10M events, 50M ledger rows, 1M each of deliveries, emails and jobs) needs
    /// about 35 GB of disk, and loaded in 27 minutes on 2 cores; a streaming replica beside it
    /// doubles the disk it needs.
    Scale {
        /// Tenants.
        #[arg(long, default_value_t = 100_000)]
        tenants: usize,
        /// Stripe events, over `months` months.
        #[arg(long, default_value_t = 10_000_000)]
        inbox: i64,
        /// Usage ledger rows, over `months` months.
        #[arg(long, default_value_t = 50_000_000)]
        ledger: i64,
        /// Audit rows in the month retired.
        #[arg(long, default_value_t = 1_000_000)]
        audit: i64,
        /// Outbound webhook deliveries (two attempts each; a message for every four) in the
        /// month retired.
        #[arg(long, default_value_t = 1_000_000)]
        deliveries: i64,
        /// Emails in the outbox, and their send jobs' statuses, in the month retired.
        #[arg(long, default_value_t = 1_000_000)]
        emails: i64,
        /// Queued jobs (a paused `noop` in the private namespace).
        #[arg(long, default_value_t = 1_000_000)]
        jobs: usize,
        /// Months the events and ledger rows span.
        #[arg(long, default_value_t = 12)]
        months: i64,
        /// Timed runs of each statement.
        #[arg(long, default_value_t = 500)]
        samples: u64,
    },
    /// The customer list (`ballast tenants list`) at a large SaaS's tenant count: p50 and p99 of
    /// the first page by MRR, the ten highest-MRR tenants in dunning, a text search, the list by
    /// last activity and a page deep in through the cursor. Seeds its own tenants in the
    /// configured PostgreSQL and deletes them afterwards.
    Customers {
        /// Tenants to seed.
        #[arg(long, default_value_t = 10_000)]
        tenants: usize,
        /// Reads per page.
        #[arg(long, default_value_t = 200)]
        n: u64,
    },
    /// The operator console's pages at a large SaaS's volume: p50 and p99 of each page's
    /// render (overview, queues, jobs, dead letters, schedules, runbooks, SLOs, maintenance,
    /// the customer list and a customer's page) through the console's own router. Seeds its
    /// own tenants and inbox rows in the configured PostgreSQL and queues runs of a paused
    /// `noop` in the configured Redis; removes the rows and resumes `noop` afterwards.
    Console {
        /// Tenants to seed.
        #[arg(long, default_value_t = 10_000)]
        tenants: usize,
        /// Stripe events to seed in the inbox.
        #[arg(long, default_value_t = 1_000_000)]
        inbox: usize,
        /// Runs of `noop` to queue.
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        /// Renders per page.
        #[arg(long, default_value_t = 50)]
        n: u64,
    },
    /// Entitlement reads (GET /v1/entitlements/{feature}) on a cache hit and on a miss, the
    /// cache reader alone, and reads per second of one process. Uses the configured PostgreSQL
    /// (its own tenants, deleted afterwards) and a private Redis namespace.
    Entitlements {
        /// Tenants, one key each.
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        /// Requests per latency phase (hits get a tenth more, unmeasured, first).
        #[arg(long, default_value_t = 5_000)]
        n: u64,
        /// Closed-loop clients of the throughput phase.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds of the throughput phase.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// The rate limiter's cost per request: the same key route with and without it, one run.
    Limiter {
        /// Requests per side (plus a tenth as warm-up).
        #[arg(long, default_value_t = 5_000)]
        n: u64,
    },
    /// A bounded steady load (webhooks, entitlement reads, no-op jobs) through an api + worker +
    /// scheduler member (`ballast serve`, started as a child process), sampling Redis memory and
    /// keys, table sizes and the member's RSS into a CSV and an SVG chart. Uses the configured
    /// PostgreSQL (its own tenants, deleted afterwards) and a private Redis namespace. A script
    /// run, not CI: it takes `--minutes`.
    Soak {
        /// Length of the run.
        #[arg(long, default_value_t = 20)]
        minutes: u32,
        /// Requests per second, all kinds together (open loop).
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Tenants the load spreads over.
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        /// Seconds between samples.
        #[arg(long, default_value_t = 30)]
        sample_secs: u32,
        /// Inbox retention during the run (seconds), so its steady state shows within the run.
        #[arg(long, default_value_t = 120)]
        retention_secs: u64,
        /// Where the CSV and the chart go.
        #[arg(long, default_value = "soak-reports")]
        out: std::path::PathBuf,
    },
    /// Signed Stripe webhooks at a fixed arrival rate into an in-process api + worker member:
    /// POST /webhooks/stripe latency and received-to-entitlements-updated latency. Uses the
    /// configured PostgreSQL (its own tenants, deleted afterwards) and a private Redis namespace.
    Webhooks {
        /// Arrival rate (requests/s), open loop.
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        secs: u32,
        /// Seconds sent first and not counted (tables are analyzed one second in).
        #[arg(long, default_value_t = 3)]
        warmup_secs: u32,
        /// Tenants the events are spread over.
        #[arg(long, default_value_t = 200)]
        tenants: usize,
        /// Run the api role alone (no workers): intake latency by itself.
        #[arg(long)]
        ingest_only: bool,
        /// Drive the member with this sender command instead (run with `sh -c`, once per rate),
        /// as a peer is driven: `{url}`, `{secret}`, `{rate}`, `{secs}`, `{prefix}` and
        /// `{customers}` are filled in; the customers `{prefix}0 … ` belong to the run's
        /// tenants. Reports received → entitlements per rate and the highest kept up with.
        /// Example: --sender 'node load.cjs {url} {secret} {rate} {secs} {prefix} {customers}'
        #[arg(long, conflicts_with_all = ["ingest_only", "warmup_secs"])]
        sender: Option<String>,
        /// With --sender: the rates to run, in order (events/s).
        #[arg(long, value_delimiter = ',', default_value = "500,1000,1500,2000", requires = "sender")]
        rates: Vec<u32>,
        /// With --sender: also drive a running peer (stripe-sync-engine's server.cjs) at this
        /// URL with the same sender after each rate, and report its CPU per event beside
        /// Ballast's (each from /proc: receiver, PostgreSQL and Redis processes together).
        #[arg(long, requires = "sender")]
        peer_url: Option<String>,
        /// The peer's signing secret.
        #[arg(long, requires = "peer_url", default_value = "whsec_peer")]
        peer_secret: String,
        /// Text of the peer's command line; its processes' CPU is the peer's.
        #[arg(long, requires = "peer_url", default_value = "server.cjs")]
        peer_matching: String,
    },
}

pub(super) async fn bench(settings: Settings, command: BenchCommand, json: bool) -> anyhow::Result<()> {
    match command {
        BenchCommand::Jobs { n, concurrency, pickup_rate, pickup_secs } => {
            let report = ballast::perf::bench::jobs::run(settings, BenchParams { n, concurrency, pickup_rate, pickup_secs }).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "noop x{n}, concurrency {concurrency}: enqueue {:.0} jobs/s, processed {:.0} jobs/s, pickup p50 {:.2} ms / p99 {:.2} ms ({} samples)",
                    report.enqueue_per_sec, report.processed_per_sec, report.pickup_p50_ms, report.pickup_p99_ms, report.pickup_samples
                );
            }
        }
        BenchCommand::Deliveries { n, concurrency, rate, secs } => {
            let r = ballast::perf::bench::deliveries::run(settings, ballast::perf::bench::deliveries::DeliveryBenchParams { n, concurrency, rate, secs }).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "deliveries: {} drained at {:.0}/s (concurrency {concurrency}); {} at {rate}/s: queued -> received p50 {:.2} ms / p99 {:.2} ms; accepted -> received p50 {:.2} ms / p99 {:.2} ms / max {:.2} ms (acceptance alone p50 {:.2} ms / p99 {:.2} ms)",
                    r.n, r.delivered_per_sec, r.sent, r.queued_p50_ms, r.queued_p99_ms, r.p50_ms, r.p99_ms, r.max_ms, r.accept_p50_ms, r.accept_p99_ms
                );
            }
        }
        BenchCommand::Usage { secs, clients, counters } => {
            let r = ballast::perf::bench::usage::run(settings, secs, clients, counters).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "usage: {} batches of 100 from {clients} senders: {:.0} events/s, POST p50 {:.2} ms / p99 {:.2} ms; flush of {} counters into the ledger: {:.2} s",
                    r.batches, r.events_per_sec, r.post_p50_ms, r.post_p99_ms, r.counters, r.flush_secs
                );
            }
        }
        BenchCommand::Console { tenants, inbox, jobs, n } => {
            let r = ballast::perf::bench::console::run(settings, tenants, inbox, jobs, n).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                for p in &r.pages {
                    println!("{}: p50 {:.2} ms / p99 {:.2} ms", p.page, p.p50_ms, p.p99_ms);
                }
                println!("({} renders a page; {} tenants, {} inbox rows, {} queued jobs seeded)", r.reads, r.tenants, r.inbox, r.jobs);
            }
        }
        BenchCommand::Scale { tenants, inbox, ledger, audit, deliveries, emails, jobs, months, samples } => {
            let params = ballast::perf::bench::scale::ScaleParams { tenants, inbox, ledger, audit, deliveries, emails, jobs, months, samples };
            let r = ballast::perf::bench::scale::run(settings, params).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "loaded in {:.0} s: {} tenants, {} events, {} ledger rows, {} audit rows, {} deliveries, {} emails and their job statuses, {} queued jobs",
                    r.fill_secs, tenants, inbox, ledger, audit, deliveries, emails, jobs
                );
                for s in &r.statements {
                    let plan = match &s.whole_scans {
                        None => String::new(),
                        Some(scans) if scans.is_empty() => "; plan index-bound".to_owned(),
                        Some(scans) => format!("; plan reads whole: {}", scans.join(", ")),
                    };
                    println!("{}: p50 {:.2} ms / p99 {:.2} ms{plan}", s.statement, s.p50_ms, s.p99_ms);
                }
                for t in &r.retentions {
                    println!(
                        "one month of {} retired ({} rows, {} kept): {:.0} ms in all, detach {} ms; a writer wrote {} rows meanwhile, slowest {:.1} ms",
                        t.table, t.rows, t.kept, t.total_ms, t.detach_ms, t.writes_meanwhile, t.writer_max_ms
                    );
                }
                for s in &r.sizes {
                    println!("{}: {} rows, {:.1} MB, {:.0} MB per million rows", s.table, s.rows, s.bytes as f64 / 1e6, s.bytes_per_million as f64 / 1e6);
                }
            }
        }
        BenchCommand::Customers { tenants, n } => {
            let r = ballast::perf::bench::customers::run(settings, tenants, n).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                for p in &r.pages {
                    println!("{}: p50 {:.2} ms / p99 {:.2} ms ({} reads, {} tenants seeded)", p.page, p.p50_ms, p.p99_ms, r.reads, r.tenants);
                }
            }
        }
        BenchCommand::Entitlements { tenants, n, concurrency, secs } => {
            let r = ballast::perf::bench::entitlements::run(settings, tenants, n, concurrency, secs).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "GET /v1/entitlements/projects x{n}, {tenants} tenants: hit p50 {:.3} ms / p99 {:.3} ms; miss p50 {:.3} ms / p99 {:.3} ms; reader alone (hit) p50 {:.3} ms / p99 {:.3} ms; {:.0} reads/s with {concurrency} clients",
                    r.hit_p50_ms, r.hit_p99_ms, r.miss_p50_ms, r.miss_p99_ms, r.reader_hit_p50_ms, r.reader_hit_p99_ms, r.reads_per_sec
                );
            }
        }
        BenchCommand::Limiter { n } => {
            let r = ballast::perf::bench::limiter::run(settings, n).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "GET /v1/entitlements x{n} per side: with limiter p50 {:.3} ms / p99 {:.3} ms; without p50 {:.3} ms / p99 {:.3} ms; overhead p50 {:+.3} ms / p99 {:+.3} ms",
                    r.limited_p50_ms, r.limited_p99_ms, r.unlimited_p50_ms, r.unlimited_p99_ms,
                    r.limited_p50_ms - r.unlimited_p50_ms, r.limited_p99_ms - r.unlimited_p99_ms
                );
            }
        }
        BenchCommand::Soak { minutes, rate, tenants, sample_secs, retention_secs, out } => {
            let params = ballast::perf::bench::soak::SoakParams { minutes, rate, tenants, sample_secs, retention_secs, out };
            let r = ballast::perf::bench::soak::run(settings, params).await?;
            println!("soak: {rate} req/s for {minutes} min; samples in {} and {}", r.csv.display(), r.chart.display());
            println!("{:<24} {:>14} {:>14}", "series", "after warm-up", "at the end");
            for (name, (warm, end)) in &r.growth {
                println!("{name:<24} {warm:>14.2} {end:>14.2}");
            }
            if let Some(last) = r.samples.last() {
                println!("requests: {} sent, {} without a 2xx", last.sent, last.failed);
            }
        }
        BenchCommand::Webhooks { sender: Some(sender), rates, secs, tenants, peer_url, peer_secret, peer_matching, .. } => {
            use ballast::perf::bench::webhooks_external::{ExternalParams, PeerParams};
            let peer = peer_url.map(|url| PeerParams { url, secret: peer_secret, matching: peer_matching });
            let params = ExternalParams { sender, rates, secs, customers: tenants, peer };
            let r = ballast::perf::bench::webhooks_external::run(settings, params).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                for rate in &r.rates {
                    println!(
                        "{}/s: {} stored, {} applied; received -> entitlements p50 {:.2} ms / p99 {:.2} ms / max {:.2} ms; {}; sender: {}",
                        rate.rate, rate.stored, rate.applied, rate.to_entitlements_p50_ms, rate.to_entitlements_p99_ms, rate.to_entitlements_max_ms,
                        if rate.kept_up { "kept up" } else { "fell behind" }, rate.sender_said
                    );
                    let c = &rate.cpu;
                    let pooler = if c.pooler_ms > 0.0 { format!(", pgbouncer {:.3}", c.pooler_ms) } else { String::new() };
                    println!("  CPU per applied event: {:.3} ms (ballast {:.3}, postgres {:.3}, redis {:.3}{pooler})", c.total_ms, c.receiver_ms, c.postgres_ms, c.redis_ms);
                    if let Some(p) = &rate.peer {
                        let c = &p.cpu;
                        println!("  peer at {}/s: CPU per event {:.3} ms (peer {:.3}, postgres {:.3}); sender: {}", rate.rate, c.total_ms, c.receiver_ms, c.postgres_ms, p.sender_said);
                    }
                }
                match r.highest_kept_up {
                    Some(rate) => println!("highest rate kept up with (p99 under 1 s, all applied): {rate}/s"),
                    None => println!("no rate was kept up with (p99 under 1 s, all applied)"),
                }
            }
        }
        BenchCommand::Webhooks { rate, secs, warmup_secs, tenants, ingest_only, sender: None, .. } => {
            let r = ballast::perf::bench::webhooks::run(settings, WebhookBenchParams { rate, secs, warmup_secs, tenants, ingest_only }).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let to_entitlements = match (r.to_entitlements_p50_ms, r.to_entitlements_p99_ms) {
                    (Some(p50), Some(p99)) => format!("received -> entitlements p50 {p50:.2} ms / p99 {p99:.2} ms; {} inbox rows processed", r.processed),
                    _ => "ingest only (no workers)".to_owned(),
                };
                println!(
                    "webhooks at {rate}/s for {secs} s over {tenants} tenants: {} requests ({} accepted, {} failed), achieved {:.0}/s; \
                     POST p50 {:.2} ms / p99 {:.2} ms / max {:.2} ms; {to_entitlements}{}{}",
                    r.requests, r.accepted, r.failed, r.achieved_per_sec, r.ingest_p50_ms, r.ingest_p99_ms, r.ingest_max_ms,
                    if r.analyzed { "" } else { " (tables not analyzed: set BALLAST_OWNER_DATABASE_URL)" },
                    if r.refusals.is_empty() { String::new() } else { format!("; refused: {}", r.refusals.iter().map(|(why, n)| format!("{n} {why}")).collect::<Vec<_>>().join(", ")) }
                );
            }
        }
    }
    Ok(())
}
