//! A route spec with a repeated or non-canonical key is refused whole, in one line naming the key; the routes stay.
//!
//! From the spec file and from the command line. (The same from `POST /route_spec` and from
//! etcd is checked with the other bad specs in
//! `posted_specs_are_routed_and_the_state_is_served.rs` and `routes_follow_the_spec_in_etcd.rs`.)

use std::time::Duration;

use vpcrouter_tests::daemon::run_once;
use vpcrouter_tests::Env;

const T: Duration = Duration::from_secs(20);
const GOOD: &str = r#"{"10.83.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.84.0.0/16": ["127.0.1.11"]}"#;
/// `GOOD` with 10.83.0.0/16 given again, last with no router: read as "last wins", it
/// would delete that CIDR's routes.
const REPEATED: &str =
    r#"{"10.83.0.0/16": ["127.0.1.10", "127.0.2.10"], "10.84.0.0/16": ["127.0.1.11"], "10.83.0.0/16": []}"#;
const WHY: &str =
    "'10.83.0.0/16' appears more than once in the route spec, which makes it ambiguous; list each CIDR once";

/// The routes of the first two tables.
fn routes(env: &Env) -> anyhow::Result<Vec<std::collections::BTreeMap<String, String>>> {
    env.world.tables[..2].iter().map(|t| env.world.routes(t)).collect()
}

#[test]
fn a_repeated_or_non_canonical_key_in_the_spec_file_is_refused_and_the_routes_stay() -> anyhow::Result<()> {
    let env = Env::new()?;
    let tables = [env.world.tables[0].as_str(), env.world.tables[1].as_str()];

    // The spec file: a non-canonical key at start is refused (nothing routed), then a good
    // spec is followed, then the repeated key refused.
    let spec = env.write("spec.json", r#"{"10.83.0.0/016": ["127.0.1.10"]}"#);
    let spec_arg = spec.to_str().unwrap_or_default();
    let d = env.daemon().args(["-m", "configfile", "-f", spec_arg, "-H", "always"]).start()?;
    d.wait_log(
        "Config ignored: '10.83.0.0/016' is not a valid route CIDR: the prefix length has a leading zero; write it as 10.83.0.0/16",
        T,
    )?;
    assert_eq!(env.world.targets(&tables, "10.83.0.0/16")?, [None, None]);
    env.write("spec.json", GOOD);
    env.wait_routed(&tables, "10.83.0.0/16", T)?;
    env.wait_routed(&tables, "10.84.0.0/16", T)?;
    let before = routes(&env)?;
    env.write("spec.json", REPEATED);
    let line = format!("Config ignored: {WHY}");
    d.wait_log(&line, T)?;
    // A "last wins" reading would be applied at once (`-H always`).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(routes(&env)?, before, "the last good spec's routes stay\n{}", env.world.dump());
    let errors = d.log().lines().filter(|l| l.contains(" ERROR ") && l.contains(&line)).count();
    assert_eq!(errors, 1, "one error line\n{}", d.log());
    Ok(())
}

#[test]
fn non_canonical_keys_on_the_command_line_stop_the_start_with_one_line() {
    for (key, canonical) in [
        ("10.55.0.0/016", "the prefix length has a leading zero; write it as 10.55.0.0/16"),
        ("0.0.0.0/00", "the prefix length has a leading zero; write it as 0.0.0.0/0"),
        ("2001:DB8::/32", "write it as 2001:db8::/32"),
        ("2001:0db8::/32", "write it as 2001:db8::/32"),
        ("::ffff:10.0.0.0/104", "an IPv4-mapped IPv6 network is an IPv4 network; write it as 10.0.0.0/8"),
    ] {
        let (code, out, err) = run_once(&[
            "-r", "us-east-1", "-v", "vpc-1", "-m", "fixedconf", "--fixed_cidr", key, "--fixed_hosts", "10.0.0.1",
        ]);
        assert_ne!(code, 0, "{key}: {out}{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{key}: one line: {err}");
        assert!(
            err.contains(&format!("'{key}' is not a valid route CIDR: ")) && err.contains(canonical),
            "{key}: {err}"
        );
    }
}
