//! `init` and `provision`: the bundle's files, idempotence, rekey, and errors that name the place.

mod support;

use std::sync::Arc;

use concentrator_headend::provision::{self, BundlePaths, ProvisionOptions};
use concentrator_headend::spec::Spec;
use concentrator_headend::store::Store;
use concentrator_mpc::backend::Backend;
use support::*;

fn aka(p: &Pilot, gw: &str) -> toml::Table {
    std::fs::read_to_string(p.bundle(gw).join("aka.toml"))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn bundle_holds_what_the_gateway_needs_and_reprovisioning_is_idempotent() {
    let p = Pilot::new("bundle");
    let store = Arc::new(Store::open_configured(&p.config).unwrap());
    let r = p.provision(&store);
    assert_eq!(r.enrolled, 5, "two gateways, two meters, one customer");
    assert_eq!(r.codes.len(), 1);

    let dir = p.bundle("gw-1");
    for f in [
        "concentrator.toml",
        "aka.toml",
        "gateway.pem",
        "gateway.key",
        "utility-ca.pem",
        "ledger.toml",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let conf: toml::Table = std::fs::read_to_string(dir.join("concentrator.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(conf["gateway"]["id"].as_str(), Some("gw-1"));
    let meters = conf["meter"].as_array().unwrap();
    assert_eq!(meters.len(), 1);
    assert_eq!(meters[0]["meter_id"].as_str(), Some("MTR-1"));
    assert_eq!(meters[0]["opening_balance_minor"].as_integer(), Some(500));
    let up = &conf["uplink"];
    let aka_path = up["aka"].as_str().unwrap();
    assert!(
        std::path::Path::new(aka_path).is_file(),
        "local bundle paths point into the bundle"
    );
    assert_eq!(
        conf["ledger"]["gateway_cert_chain"].as_str(),
        up["cert"].as_str()
    );

    let a = aka(&p, "gw-1");
    assert_eq!(a["home_network_key_id"].as_integer(), Some(1));
    assert_eq!(a["profile"].as_str(), Some("b"));
    assert_eq!(
        hex::decode(a["home_network_public_key"].as_str().unwrap())
            .unwrap()
            .len(),
        33
    );
    assert_eq!(a["modes"].as_array().unwrap().len(), 2);
    let m = &a["meter"].as_array().unwrap()[0];
    assert_eq!(m["meter"].as_str(), Some("MTR-1"));
    let rec = store.meter("MTR-1").unwrap().unwrap();
    assert_eq!(m["imsi"].as_str(), Some(rec.imsi.as_str()));
    assert!(rec.imsi.starts_with("00101") && rec.imsi.len() == 15);
    assert_eq!(m["k"].as_str(), Some(hex::encode(rec.k).as_str()));
    assert_eq!(rec.kid.len(), 32);
    // The gateway certificate: CN = id, OU gateway, from the utility CA.
    let cert =
        openssl::x509::X509::from_pem(&std::fs::read(dir.join("gateway.pem")).unwrap()).unwrap();
    let ca =
        openssl::x509::X509::from_pem(&std::fs::read(dir.join("utility-ca.pem")).unwrap()).unwrap();
    assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
    let ou = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::ORGANIZATIONALUNITNAME)
        .next()
        .unwrap();
    assert_eq!(ou.data().as_slice(), b"gateway");
    // The customer's code works once, is stored hashed.
    let customers = std::fs::read_to_string(p.out.join("customers.txt")).unwrap();
    let code = customers
        .lines()
        .find(|l| l.starts_with("C-1\t"))
        .unwrap()
        .split('\t')
        .nth(2)
        .unwrap()
        .to_string();
    assert_eq!(code, r.codes[0].1);
    assert!(!format!("{:?}", store.customer("C-1").unwrap().unwrap()).contains(&code));

    // Again: nothing changes (keys, certificate, code).
    let before = (
        std::fs::read(dir.join("aka.toml")).unwrap(),
        std::fs::read(dir.join("gateway.pem")).unwrap(),
    );
    let r2 = p.provision(&store);
    assert_eq!((r2.enrolled, r2.kept, r2.codes.len()), (0, 5, 0));
    assert_eq!(std::fs::read(dir.join("aka.toml")).unwrap(), before.0);
    assert_eq!(std::fs::read(dir.join("gateway.pem")).unwrap(), before.1);
    assert_eq!(
        std::fs::read_to_string(p.out.join("customers.txt")).unwrap(),
        customers
    );
    drop(store);
    let he = concentrator_headend::HeadEnd::open(p.config.clone()).unwrap();
    assert!(he.backend().customer_by_auth_code(&code).unwrap().is_some());

    // --rekey: new K/OPc, same IMSI.
    provision::run(
        &p.config,
        &he.store(),
        &p.spec(),
        &ProvisionOptions {
            out: p.out.clone(),
            rekey: true,
            paths: BundlePaths::Appliance,
            validator: None,
        },
    )
    .unwrap();
    let after = he.store().meter("MTR-1").unwrap().unwrap();
    assert_eq!(after.imsi, rec.imsi);
    assert_ne!(after.k, rec.k);
    let conf = std::fs::read_to_string(dir.join("concentrator.toml")).unwrap();
    assert!(
        conf.contains("aka = \"/var/lib/concentrator/secrets/aka.toml\""),
        "{conf}"
    );
    assert!(conf.contains("config = \"/etc/concentrator/ledger.toml\""));
}

#[test]
fn mistakes_in_the_file_are_named() {
    let p = Pilot::new("spec-errors");
    let cases = [
        ("[[gateway]]\nid = \"gw 1\"\nledger = {}\n", "gw 1"),
        ("[[gateway]]\nid = \"gw-1\"\n", "no ledger rules"),
        ("[[gateway]]\nid = \"gw-1\"\nledger = {}\n[[meter]]\nmeter = \"M-1\"\ngateway = \"gw-9\"\ndwelling = \"x\"\nbus = \"b\"\naddress = \"1\"\ndriver = \"d\"\n", "gw-9"),
        ("[[gateway]]\nid = \"gw-1\"\nledger = {}\n[[customer]]\nid = \"C\"\nname = \"n\"\nmsisdn = \"12\"\nmeters = [\"nope\"]\n", "nope"),
        ("[[gateway]]\nid = \"gw-1\"\nledger = {}\ncolour = 1\n", "colour"),
    ];
    for (text, needle) in cases {
        let f = p.dir.0.join("bad.toml");
        std::fs::write(&f, text).unwrap();
        let err = Spec::load(&f).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains(needle), "{err}");
    }
    // init refuses to overwrite a pilot.
    let err = concentrator_headend::init::run(&p.config.base, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds a pilot"), "{err}");
}

/// Issue #15: with `web_listen` the bundle turns the installer web UI on: a `[web]` table with the
/// gateway's certificate, a users file holding only the hash, and the password beside the bundle.
/// Provisions the pilot with `extra` keys in gw-1's table; the pilot and gw-1's configuration.
fn provision_gw1_with(name: &str, extra: &str) -> (Pilot, toml::Table) {
    let p = Pilot::new(name);
    let spec = SPEC.replacen(
        "ledger_file = \"ledger.toml\"\n",
        &format!("ledger_file = \"ledger.toml\"\n{extra}"),
        1,
    );
    std::fs::write(p.dir.0.join("spec.toml"), spec).unwrap();
    let store = Arc::new(Store::open_configured(&p.config).unwrap());
    p.provision(&store);
    let conf = std::fs::read_to_string(p.bundle("gw-1").join("concentrator.toml"))
        .unwrap()
        .parse()
        .unwrap();
    (p, conf)
}

#[test]
fn web_listen_gives_the_bundle_the_installer_ui_and_the_password_stays_outside() {
    let (p, conf) = provision_gw1_with("bundle-web", "web_listen = [\"192.168.7.1:8443\"]\n");
    let dir = p.bundle("gw-1");
    let web = conf["web"].as_table().unwrap();
    assert_eq!(
        web["listen"].as_array().unwrap()[0].as_str(),
        Some("192.168.7.1:8443")
    );
    for (key, file) in [
        ("cert", "gateway.pem"),
        ("key", "gateway.key"),
        ("users", "web-users.toml"),
    ] {
        assert!(web[key].as_str().unwrap().ends_with(file), "{key}: {web:?}");
    }
    let users: toml::Table = std::fs::read_to_string(dir.join("web-users.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let user = &users["user"].as_array().unwrap()[0];
    assert_eq!(user["role"].as_str(), Some("installer"));
    let password_file = dir.with_file_name("concentrator.installer-password");
    let password = std::fs::read_to_string(&password_file).unwrap();
    assert!(concentrator_mpc::password::verify(
        password.trim(),
        user["password"].as_str().unwrap()
    )
    .unwrap());
    assert!(
        !std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(password.trim()))),
        "the password is not in the bundle"
    );
    // gw-2 has no web_listen: no UI.
    let conf2: toml::Table = std::fs::read_to_string(p.bundle("gw-2").join("concentrator.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(!conf2.contains_key("web"));
}

#[test]
fn a_run_that_fails_half_way_enrols_nothing_and_the_next_run_completes() {
    let p = Pilot::new("halfway");
    // The second gateway's ledger rules are missing: its bundle cannot be written.
    let broken = SPEC.replacen(
        "id = \"gw-2\"\nledger = { currency = \"EUR\" }",
        "id = \"gw-2\"\nledger_file = \"missing-ledger.toml\"",
        1,
    );
    assert_ne!(broken, SPEC);
    std::fs::write(p.dir.0.join("spec.toml"), &broken).unwrap();
    let store = Arc::new(Store::open_configured(&p.config).unwrap());
    let err = provision::run(
        &p.config,
        &store,
        &p.spec(),
        &ProvisionOptions {
            out: p.out.clone(),
            rekey: false,
            paths: BundlePaths::Local,
            validator: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing-ledger.toml"), "{err}");
    assert!(store.gateways().unwrap().is_empty(), "no gateway enrolled");
    assert!(store.meters().unwrap().is_empty(), "no meter enrolled");
    assert!(
        store.customers().unwrap().is_empty(),
        "no customer enrolled"
    );

    // Fixed, the next run enrols everything and its bundles match the store.
    std::fs::write(p.dir.0.join("spec.toml"), SPEC).unwrap();
    let r = p.provision(&store);
    assert_eq!(r.enrolled, 5);
    let a = aka(&p, "gw-1");
    let rec = store.gateway("gw-1").unwrap().unwrap();
    assert_eq!(a["gateway"]["imsi"].as_str(), Some(rec.imsi.as_str()));
}

/// Subscriber keys at rest: the store holds every K and OPc only encrypted under the KEK that `init`
/// wrote (0600, outside the store); read through the store they are the keys the bundle carries; the
/// store directory is private; without the KEK the records refuse to open and say how to fix it.
#[test]
fn subscriber_keys_are_stored_encrypted_under_the_kek_file() {
    let p = Pilot::new("kek");
    let store = Arc::new(Store::open_configured(&p.config).unwrap());
    assert!(store.encrypts_secrets(), "init configures a KEK");
    let broker = std::fs::read_to_string(p.config.base.join("mosquitto.conf")).unwrap();
    let user = broker
        .lines()
        .find(|l| l.starts_with("user "))
        .unwrap_or("");
    assert!(
        !user.is_empty() && user != "user root",
        "the pilot broker must not run as root: {user:?}"
    );
    p.provision(&store);
    let kek = p.config.base.join("kek.hex");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", kek.display());
    }
    let a = aka(&p, "gw-1");
    let mut secrets: Vec<String> = vec![
        a["gateway"]["k"].as_str().unwrap().into(),
        a["gateway"]["opc"].as_str().unwrap().into(),
    ];
    for m in a["meter"].as_array().unwrap() {
        secrets.push(m["k"].as_str().unwrap().into());
        secrets.push(m["opc"].as_str().unwrap().into());
    }
    assert!(secrets.iter().all(|s| s.len() == 32), "{secrets:?}");
    for prefix in ["m/", "g/", "c/", "ctx/"] {
        for (key, raw) in store.scan_raw(prefix).unwrap() {
            let text = String::from_utf8_lossy(&raw);
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "{} holds a key in the clear: {text}",
                    String::from_utf8_lossy(&key)
                );
            }
        }
    }
    let rec = store.meter("MTR-1").unwrap().unwrap();
    let m = &a["meter"].as_array().unwrap()[0];
    assert_eq!(m["k"].as_str(), Some(hex::encode(rec.k).as_str()));
    assert_eq!(m["opc"].as_str(), Some(hex::encode(rec.opc).as_str()));
    if p.config.store.backend == concentrator_headend::config::StoreBackend::Sled {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dir = p.config.path(&p.config.store.path);
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        drop(store);
        let bare = Store::open(&p.config.path(&p.config.store.path)).unwrap();
        let e = bare.meter("MTR-1").unwrap_err().to_string();
        assert!(e.contains("[store] kek"), "{e}");
    }
}

/// `provision --remove`: all or nothing, never at the cost of money. A gateway that still serves a
/// meter, a meter with a token on its way or in credit, a customer with a purchase on its way are
/// refused with the reason and nothing changes; what goes cannot attach any more, and its tokens stay.
#[test]
fn removing_subscribers_refuses_what_would_lose_money_and_keeps_the_history() {
    use concentrator_headend::deprovision::{remove, Removal};
    let p = Pilot::new("remove");
    let store = Arc::new(Store::open_configured(&p.config).unwrap());
    p.provision(&store);
    let he = concentrator_headend::HeadEnd::with_store(p.config.clone(), store.clone()).unwrap();
    let bought = he.backend().top_up("C-1", "MTR-1", 200, [7; 16]).unwrap();
    let r = |s: &str| s.parse::<Removal>().unwrap();
    let before = store.scan_raw("").unwrap().len();

    let e = remove(&store, &[r("gateway:gw-1")], false, "EUR")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MTR-1") && e.contains("nothing was removed"),
        "{e}"
    );
    let e = remove(&store, &[r("meter:MTR-1"), r("gateway:gw-1")], false, "EUR")
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("serials {}", bought.serial)), "{e}");
    let e = remove(&store, &[r("customer:C-1")], false, "EUR")
        .unwrap_err()
        .to_string();
    assert!(e.contains("on their way"), "{e}");
    // MTR-2 in credit: refused, and the refusal of a later item undoes nothing written earlier.
    store
        .update_meter_apply("MTR-2", concentrator_headend::store::Batch::new(), |m| {
            m.view.balance_minor = Some(300)
        })
        .unwrap();
    let e = remove(&store, &[r("meter:MTR-2"), r("gateway:gw-2")], false, "EUR")
        .unwrap_err()
        .to_string();
    assert!(e.contains("3.00 EUR"), "{e}");
    assert!(e.contains("--force"), "{e}");
    assert_eq!(store.scan_raw("").unwrap().len(), before, "nothing changed");

    let imsi = store.meter("MTR-2").unwrap().unwrap().imsi;
    let done = remove(&store, &[r("gateway:gw-2"), r("meter:MTR-2")], true, "EUR").unwrap();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(store.meter("MTR-2").unwrap().is_none());
    assert!(store.gateway("gw-2").unwrap().is_none());
    assert!(
        store.get_raw(format!("imsi/{imsi}")).unwrap().is_none(),
        "it can no longer attach"
    );
    // What stays: gw-1, MTR-1 and its token.
    assert!(store.meter("MTR-1").unwrap().is_some());
    assert_eq!(store.tokens("MTR-1").unwrap().len(), 1);

    for bad in ["house:1", "meter:", "MTR-1"] {
        let e = bad.parse::<Removal>().unwrap_err();
        assert!(e.contains("meter:NUMBER"), "{bad}: {e}");
    }
}

#[test]
fn the_sims_pin_and_the_gateways_own_sections_pass_into_the_bundle() {
    let (p, conf) = provision_gw1_with(
        "bundle-modem",
        "modem = { port = \"/dev/modem-at\", apn = \"m2m.example\", pin_file = \"/var/lib/concentrator/secrets/sim.pin\" }\n\
         power = { fail_line = \"gpiochip0:6\" }\n\
         update = { trial_limit_s = 300 }\n",
    );
    let dir = p.bundle("gw-1");
    // A local bundle names the PIN beside its other secrets (the installer adds the file).
    let pin = conf["modem"]["pin_file"].as_str().unwrap();
    assert_eq!(
        std::path::Path::new(pin),
        std::fs::canonicalize(&dir).unwrap().join("sim.pin")
    );
    assert_eq!(conf["modem"]["apn"].as_str(), Some("m2m.example"));
    assert_eq!(conf["power"]["fail_line"].as_str(), Some("gpiochip0:6"));
    assert_eq!(conf["update"]["trial_limit_s"].as_integer(), Some(300));
}
