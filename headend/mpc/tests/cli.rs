//! The `mpc` binary end to end against `serve` with the in-memory payment server.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use concentrator_mpc::backend::Notice;
use concentrator_security::token::{CreditToken, SignedToken};
use serde_json::Value;

struct Phone {
    home: PathBuf,
    profile: PathBuf,
}

impl Phone {
    fn new(name: &str) -> Phone {
        let home = temp_dir(name);
        Phone {
            profile: home.join("config/mpc/profile.toml"),
            home,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mpc"));
        c.args(["--profile", self.profile.to_str().unwrap()])
            .args(args)
            .env("MPC_PASSWORD", PASSWORD)
            .env("HOME", &self.home)
            .env_remove("MPC_PROFILE")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "mpc {args:?} failed: {stderr}\n{stdout}"
        );
        stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(self.ok(&a).trim()).unwrap()
    }

    fn register(&self, server: &TestServer) {
        let out = self.ok(&[
            "register",
            "--server",
            &server.host_port(),
            "--ca",
            ca_path().to_str().unwrap(),
            "--code",
            CODE_1,
            "--user",
            "alice",
        ]);
        assert!(out.contains("registered alice (customer C-0001"), "{out}");
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn register_meters_topup_history_and_tokens() {
    let server = TestServer::start();
    let phone = Phone::new("cli-main");
    phone.register(&server);
    assert_eq!(mode(&phone.profile), 0o600);
    assert_eq!(mode(phone.profile.parent().unwrap()), 0o700);
    let text = std::fs::read_to_string(&phone.profile).unwrap();
    assert!(text.contains("imsi = \"001010000000001\""), "{text}");

    let meters = phone.json(&["meters"]);
    assert_eq!(meters[0]["meter"], "MTR-1");
    assert_eq!(meters[0]["balance_minor"], 500);
    let human = phone.ok(&["balance", "MTR-1"]);
    assert!(
        human.contains("MTR-1") && human.contains("balance 5.00 EUR"),
        "{human}"
    );

    // The receipt arrives while `mpc topup` waits: the backend applies the token once it is bought.
    let backend = server.backend.clone();
    let applier = std::thread::spawn(move || {
        for _ in 0..200 {
            if backend.purchase_count() == 1 {
                std::thread::sleep(Duration::from_millis(100));
                return backend.apply("MTR-1", 1);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no purchase came");
    });
    let out = phone.ok(&["topup", "MTR-1", "20.00", "--wait", "10"]);
    assert_eq!(applier.join().unwrap(), 2500);
    assert!(out.contains("paid: 20.00 EUR for MTR-1 (token 1"), "{out}");
    assert!(
        out.contains("token 1 applied (20.00 EUR), balance now 25.00 EUR"),
        "{out}"
    );

    // No receipt: the token is saved and the local path is explained.
    let out = phone.ok(&["topup", "MTR-2", "--minor", "150", "--wait", "1"]);
    assert!(out.contains("no receipt from the gateway yet"), "{out}");
    assert!(out.contains("concentrator topup --token"), "{out}");
    let saved = phone.home.join("config/mpc/tokens/MTR-2-1.token");
    assert_eq!(mode(&saved), 0o600);

    let history = phone.json(&["history", "MTR-1"]);
    assert_eq!(history[0]["what"], "applied");
    assert_eq!(history[0]["balance_after_minor"], 2500);
    assert_eq!(history[1]["what"], "purchased");

    // For people: local dates and money with its currency, never Unix seconds.
    let raw_seconds = |text: &str| {
        text.split(|c: char| !c.is_ascii_digit())
            .any(|w| w.len() >= 9)
    };
    let human = phone.ok(&["history", "MTR-1"]);
    assert!(
        human.contains("applied") && human.contains("25.00 EUR"),
        "{human}"
    );
    assert!(!raw_seconds(&human), "{human}");
    let human = phone.ok(&["tokens"]);
    assert!(
        human.contains("MTR-1  token 1  20.00 EUR  valid until 20"),
        "{human}"
    );
    assert!(!raw_seconds(&human), "{human}");

    let tokens = phone.json(&["tokens"]);
    assert_eq!(tokens.as_array().unwrap().len(), 2);
    assert_eq!(tokens[0]["meter"], "MTR-1");
    assert_eq!(tokens[1]["amount_minor"], 150);

    // One token file for `concentrator topup --token FILE` (hex of the SignedToken octets).
    let out_file = phone.home.join("t.hex");
    phone.ok(&[
        "token",
        "1",
        "--meter",
        "MTR-2",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    let hex_text = std::fs::read_to_string(&out_file).unwrap();
    let octets = hex::decode(hex_text.trim()).unwrap();
    let token = CreditToken::decode(&SignedToken::decode(&octets).unwrap().0.body).unwrap();
    assert_eq!(
        (token.meter_id.as_str(), token.serial, token.amount_minor),
        ("MTR-2", 1, 150)
    );

    // Serial 1 exists for both meters: the binary asks which.
    let out = phone.run(&["token", "1", "--out", out_file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--meter"));

    // A lost token file is fetched again from the server.
    std::fs::remove_file(&saved).unwrap();
    phone.ok(&[
        "token",
        "1",
        "--meter",
        "MTR-2",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(saved.exists());

    // The SQN window moved with every login and was saved.
    let after = std::fs::read_to_string(&phone.profile).unwrap();
    assert_ne!(after, text);
}

#[test]
fn watch_prints_alerts_as_they_come() {
    let server = TestServer::start();
    let phone = Phone::new("cli-watch");
    phone.register(&server);
    let mut child = phone
        .cmd(&["--json", "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if server.backend.subscribers() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(server.backend.subscribers(), 1, "mpc watch subscribed");
    server.backend.notify(
        "MTR-1",
        Notice::LowCredit {
            meter: "MTR-1".into(),
            balance_minor: 75,
            at: 1_767_225_700,
        },
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["notice"], "low credit");
    assert_eq!(v["balance_minor"], 75);
}

#[test]
fn topup_passes_on_the_gateways_reason_and_never_waits_in_silence() {
    // Failed before: `mpc topup` printed the purchase, then nothing until the wait ran out.
    let server = TestServer::start();
    let phone = Phone::new("cli-delay");
    phone.register(&server);
    let backend = server.backend.clone();
    let gateway = std::thread::spawn(move || {
        for _ in 0..200 {
            if backend.purchase_count() == 1 {
                backend.notify(
                    "MTR-1",
                    Notice::Delivered {
                        meter: "MTR-1".into(),
                        serial: 1,
                        at: 1_767_230_000,
                    },
                );
                backend.notify(
                    "MTR-1",
                    Notice::Delayed {
                        meter: "MTR-1".into(),
                        serial: 1,
                        reason: "meter MTR-1 has no account until its first reading".into(),
                        at: 1_767_230_001,
                    },
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no purchase came");
    });
    let out = phone.ok(&["topup", "MTR-1", "5.00", "--wait", "11"]);
    gateway.join().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{out}"))
    };
    let (paid, delivered, delayed, still, end) = (
        at("paid: 5.00 EUR for MTR-1 (token 1"),
        at("token 1 delivered to the gateway at"),
        at("the gateway cannot apply token 1 yet: meter MTR-1 has no account until its first reading"),
        at("still waiting for the gateway ("),
        at("no receipt from the gateway yet (see the reason above)"),
    );
    assert!(
        paid < delivered && delivered < delayed && delayed < still && still < end,
        "{out}"
    );
    // What the customer can do: nothing but wait, or apply the saved token at the gateway.
    assert!(out.contains("opens at its first reading"), "{out}");
    assert!(out.contains("you pay nothing more"), "{out}");
    assert!(out.contains("concentrator topup --token"), "{out}");
    assert!(!out.contains("1767230000"), "no Unix seconds: {out}");
}

#[test]
fn a_profile_readable_by_others_is_refused() {
    let server = TestServer::start();
    let phone = Phone::new("cli-perms");
    phone.register(&server);
    std::fs::set_permissions(&phone.profile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = phone.run(&["meters"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("chmod 600 {}", phone.profile.display())),
        "{stderr}"
    );
}

#[test]
fn usage_and_login_errors_are_explained() {
    let server = TestServer::start();
    let phone = Phone::new("cli-errors");

    let out = phone.run(&["meters"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `mpc register` first"));

    phone.register(&server);
    let out = phone
        .cmd(&["meters"])
        .env("MPC_PASSWORD", "wrong password")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("login failed"), "{stderr}");
    assert!(stderr.contains("password"), "{stderr}");

    let out = phone.run(&["topup", "MTR-1", "12.345"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not money"));
    let out = phone.run(&["topup", "MTR-1"]);
    assert_eq!(out.status.code(), Some(2), "clap: the amount is required");

    // Registering over an existing profile is refused (its keys would be lost).
    let out = phone.run(&[
        "register",
        "--server",
        "localhost:1",
        "--ca",
        "/x",
        "--code",
        "c",
        "--user",
        "u",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("a profile exists"));

    // The password file takes precedence over the environment.
    let pw = phone.home.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let out = phone
        .cmd(&["--password-file", pw.to_str().unwrap(), "meters"])
        .env("MPC_PASSWORD", "wrong password")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
