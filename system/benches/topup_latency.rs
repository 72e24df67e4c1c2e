//! Top-up latency on loopback, from the phone to the receipt: `mpc`'s client asks the head-end for a
//! top-up, the head-end signs the token and sends it sealed over MQTT, the gateway (`concentratord`, a
//! child process) applies it and flushes its store, the receipt goes back up and the head-end pushes
//! "applied" to the phone. One logged-in session, 1 000 top-ups one after another; prints the median,
//! p90, p99 and the maximum.
//!
//! `cargo bench -p concentrator-system --bench topup_latency` (Mosquitto when installed, else the
//! embedded broker; `TOPUPS=N` changes the count).

use std::time::{Duration, Instant};

use concentrator_mpc::backend::Notice;
use concentrator_mpc::client::Client;
use concentrator_mpc::profile::Profile;
use concentrator_system::{sibling_binary, BrokerChoice, GatewayRun, HeadEndRun, Options, System};

const SPEC: &str = r#"
[[gateway]]
id = "gw-bench"
[gateway.ledger]
currency = "EUR"
utc_offset_minutes = 0
holidays = []
standing_charge_minor_per_day = 0
low_credit_levels_minor = []
tariff = { kind = "flat", rate = 25000 }
emergency = { amount_minor = 0, auto_select = false, offer_below_minor = 0 }
debt_recovery = { kind = "percent_of_top_up", basis_points = 0 }
friendly = { hours = [], weekends = false, holidays = false }
relay = { reconnect_threshold_minor = 100, reconnect = "direct", verify_after_s = 30, max_attempts = 3 }
plausibility = { max_power_w = 100000, slack_wh = 1000, rebaseline_after = 3 }
[[gateway.bus]]
name = "rs485-1"
backend = "sim"
baud = 9600
format = "8E1"
poll_interval_s = 5
[[meter]]
meter = "BENCH-1"
gateway = "gw-bench"
dwelling = "X-1"
bus = "rs485-1"
address = "000000000901"
driver = "dlt645"
password = "02123456"
opening_balance_minor = 100000
sim = { load_w = 500, start_kwh = 10.0 }
[[customer]]
id = "C-1"
name = "Bench"
msisdn = "491700000009"
meters = ["BENCH-1"]
"#;

fn main() {
    let n: usize = std::env::var("TOPUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // BENCH_LOG=1: the head-end's log on stderr, and the gateway's log kept in the directory.
    let keep = std::env::var_os("BENCH_LOG").is_some();
    let _log = keep.then(|| concentrator_appliance::logging::init(log::LevelFilter::Info));
    let dir = std::env::temp_dir().join(format!("topup-bench-{}", std::process::id()));
    let bin = sibling_binary("concentratord").unwrap_or_else(|e| panic!("{e}"));
    let mut system = System::start(&Options {
        dir: dir.clone(),
        broker: BrokerChoice::Auto,
        gateway: GatewayRun::Child { bin },
        headend: HeadEndRun::InProcess,
        spec: SPEC.into(),
        register: vec![("C-1".into(), "bench".into(), "bench-pass".into())],
        key_lifetime_s: None,
        headend_settings: Vec::new(),
        extra_acl: None,
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    system.wait_attached(Duration::from_secs(60)).unwrap();
    println!("broker: {}", system.broker.description);
    let path = system.profiles["bench"].clone();
    let mut keys = Profile::load(&path).unwrap().keys(&path).unwrap();
    let mut client = Client::connect(&system.phone_addr.to_string(), &system.ca).unwrap();
    client
        .login(&mut keys, "bench-pass", &mut |_| Ok(()))
        .unwrap();
    client.watch().unwrap();
    let mut times = Vec::with_capacity(n);
    let mut buying = Vec::with_capacity(n);
    for i in 0..(n + 20) {
        let started = Instant::now();
        let p = client.top_up("BENCH-1", 100).unwrap();
        if i >= 20 {
            buying.push(started.elapsed());
        }
        match client
            .wait_applied("BENCH-1", p.serial, Duration::from_secs(30))
            .unwrap()
        {
            Some(Notice::Applied { .. }) => {}
            other => panic!("top-up {i}: {other:?}"),
        }
        if i >= 20 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    buying.sort();
    println!(
        "of which the purchase (phone to signed token): median {:.2} ms",
        buying[buying.len() / 2].as_secs_f64() * 1e3
    );
    let q = |f: f64| times[((times.len() as f64 * f).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "top-up latency, phone to receipt, {} top-ups (after 20 warm-up): median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        q(0.5).as_secs_f64() * 1e3,
        q(0.9).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );
    system.stop().unwrap();
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
