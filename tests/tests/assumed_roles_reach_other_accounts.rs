//! vpcrouter reaches another account's VPC through an assumed role (`--role-arn` or a profile), or stops in one line.
//!
//! Shared VPCs and other accounts. The VPC lives in account 222222222222 (built with
//! credentials of a role assumed there: moto keeps each account's resources apart);
//! vpcrouter runs with moto's default dummy keys (account 123456789012) and reaches it only
//! through `--role-arn`, or a profile with `role_arn` + `source_profile`.
//! (One test in this binary points the SDK's environment chain at its own moto; the
//! daemons get their environment explicitly.)

use std::time::{Duration, Instant};

use serde_json::Value;
use vpcrouter_ec2::limits::Limits;
use vpcrouter_ec2::role::{RoleArn, RoleConfig};
use vpcrouter_ec2::{Ec2, Ec2Error};
use vpcrouter_tests::daemon::run_once;
use vpcrouter_tests::http_client::get;
use vpcrouter_tests::moto::Moto;
use vpcrouter_tests::{wait_for, Env};

const T: Duration = Duration::from_secs(20);
/// The role in the VPC owner's account.
const ROLE: &str = "arn:aws:iam::222222222222:role/vpcrouter-routes";

fn spec_args(env: &Env) -> Vec<String> {
    let spec = env.write("spec.json", r#"{"10.55.0.0/16": ["127.0.1.10"]}"#);
    ["-m", "configfile", "-f", spec.to_str().unwrap_or_default(), "-H", "always"].map(String::from).to_vec()
}

/// The roles assumed with `session` as their session name.
fn sessions(moto: &Moto, session: &str) -> anyhow::Result<Vec<Value>> {
    Ok(moto.assumed_roles()?.into_iter().filter(|r| r["session_name"] == session).collect())
}

/// The last line vpcrouter wrote (its error, on stderr, when it failed).
fn last_line(log: &str) -> String {
    log.lines().last().unwrap_or_default().to_string()
}

#[test]
fn role_arn_reaches_the_vpc_of_the_roles_account_and_the_own_account_does_not() -> anyhow::Result<()> {
    let env = Env::new_in_account_of(ROLE)?;
    let rt1 = env.world.tables[0].clone();
    let args = spec_args(&env);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // The dummy keys' own account has no such VPC: vpcrouter stops at start.
    let mut d = env.daemon().args(&args).start()?;
    let status = d.wait(T)?;
    assert_eq!(status.code(), Some(1), "{}", d.log());
    assert!(
        last_line(&d.log()).contains(&format!("VPC '{}' not found in region 'us-east-1'", env.world.vpc_id)),
        "{}",
        d.log()
    );

    let mut with_role = args.clone();
    with_role.extend(["--role-arn", ROLE, "--role-session-name", "roles-test", "--role-external-id", "ext-1234"]);
    let d = env.daemon().args(&with_role).start()?;
    env.wait_routed(&[&rt1], "10.55.0.0/16", T).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    d.wait_log("*** Starting vpcrouter ***", T)?;
    let log = d.log();
    assert!(log.contains("EC2 calls are made as an assumed role") && log.contains("account=\"222222222222\""), "{log}");
    assert!(!log.contains("ext-1234"), "the external id is not logged: {log}");

    // moto saw one AssumeRole with the session name and external id given, in the role's
    // account; the many EC2 calls since used the cached credentials.
    let assumed = sessions(&env.moto, "roles-test")?;
    assert_eq!(assumed.len(), 1, "{assumed:?}");
    let a = &assumed[0];
    assert_eq!(
        (&a["role_arn"], &a["external_id"], &a["account_id"]),
        (&ROLE.into(), &"ext-1234".into(), &"222222222222".into())
    );

    let doc = get(d.port, "/status", None)?.json()?;
    assert_eq!((&doc["role_arn"], &doc["role_session_name"]), (&ROLE.into(), &"roles-test".into()), "{doc}");
    let root = get(d.port, "/", Some("application/json"))?.json()?;
    assert_eq!(root["params"]["role_external_id_set"], true, "{root}");
    assert!(!root.to_string().contains("ext-1234"), "{root}");
    Ok(())
}

#[test]
fn a_profile_with_role_arn_and_source_profile_works_through_the_standard_chain() -> anyhow::Result<()> {
    let env = Env::new_in_account_of(ROLE)?;
    let rt1 = env.world.tables[0].clone();
    let config = env.write(
        "aws-config",
        &format!(
            "[profile routes]\nrole_arn = {ROLE}\nsource_profile = base\nrole_session_name = from-profile\n\
             external_id = profile-ext\nregion = us-east-1\n\n[profile base]\nregion = us-east-1\n"
        ),
    );
    let credentials =
        env.write("aws-credentials", "[base]\naws_access_key_id = testing\naws_secret_access_key = testing\n");
    let args = spec_args(&env);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The keys in the environment would come first in the chain: the profile's are used.
    let d = env
        .daemon()
        .args(&args)
        .env("AWS_CONFIG_FILE", config.to_str().unwrap_or_default())
        .env("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap_or_default())
        .env("AWS_PROFILE", "routes")
        .without_env("AWS_ACCESS_KEY_ID")
        .without_env("AWS_SECRET_ACCESS_KEY")
        .start()?;
    env.wait_routed(&[&rt1], "10.55.0.0/16", T).map_err(|e| anyhow::anyhow!("{e}\n{}", d.log()))?;
    let assumed = sessions(&env.moto, "from-profile")?;
    assert_eq!(assumed.len(), 1, "{assumed:?}");
    assert_eq!((&assumed[0]["role_arn"], &assumed[0]["external_id"]), (&ROLE.into(), &"profile-ext".into()));
    Ok(())
}

#[test]
fn a_role_that_cannot_be_assumed_stops_the_start_with_one_line() -> anyhow::Result<()> {
    // Malformed: a usage error before anything starts.
    let fixed = ["-m", "fixedconf", "--fixed_cidr", "10.55.0.0/16", "--fixed_hosts", "127.0.1.10", "-H", "always"];
    let (code, _, err) = run_once(&[&fixed[..], &["--role-arn", "arn:aws:iam::2222:role/x"]].concat());
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: --role-arn: 'arn:aws:iam::2222:role/x' is not an IAM role ARN"), "{err}");

    let env = Env::new()?;
    let mut args = spec_args(&env);
    args.extend(["--role-arn", ROLE].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // No source credentials at all.
    let empty = env.write("empty", "");
    let mut d = env
        .daemon()
        .args(&args)
        .env("AWS_CONFIG_FILE", empty.to_str().unwrap_or_default())
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .without_env("AWS_ACCESS_KEY_ID")
        .without_env("AWS_SECRET_ACCESS_KEY")
        .start()?;
    assert_eq!(d.wait(T)?.code(), Some(1), "{}", d.log());
    let line = last_line(&d.log());
    assert!(
        line.starts_with(&format!("error: cannot assume role {ROLE}: no source credentials to call STS with")),
        "{}",
        d.log()
    );
    assert!(line.ends_with(": check the trust policy of the role and the source credentials"), "{line}");

    // STS refuses: moto now checks keys, and the dummy ones are none it issued. (moto answers
    // InvalidClientTokenId in EC2's error format, whose code the STS client cannot read: the
    // HTTP status is what is left.) The log level is the default one.
    env.moto.enforce_auth(0)?;
    let mut d = env.daemon().args(&args).without_env("VPCROUTER_LOG").start()?;
    assert_eq!(d.wait(T)?.code(), Some(1), "{}", d.log());
    let log = d.log();
    let line = last_line(&log);
    let refused = format!("error: cannot assume role {ROLE}: STS refused AssumeRole (");
    assert!(line.starts_with(&refused), "{log}");
    assert!(line.contains("(InvalidClientTokenId)") || line.contains("(HTTP 403)"), "{line}");
    assert!(line.ends_with(": check the trust policy of the role and the source credentials"), "{line}");
    assert!(!log.contains("panicked") && !log.contains("Error {"), "no panic, no debug dump: {log}");
    Ok(())
}

#[test]
fn assumed_credentials_are_cached_and_renewed_before_they_expire() -> anyhow::Result<()> {
    let env = Env::new_in_account_of(ROLE)?;
    for (k, v) in env.moto.env() {
        std::env::set_var(k, v);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // STS grants at least 900 s; moto takes less. 20 s: the SDK's identity cache renews
    // 10–15 s before expiry, so 5–10 s after the first AssumeRole.
    let role = RoleConfig {
        arn: RoleArn::parse(ROLE).map_err(anyhow::Error::msg)?,
        session_name: "refresh-test".into(),
        external_id: None,
        session_length: Some(Duration::from_secs(20)),
    };
    let ec2 = rt.block_on(Ec2::connect_as(vpcrouter_tests::world::REGION, Some(&role), std::sync::Arc::new(())));
    let limits = Limits::new(Default::default());
    let state = rt.block_on(ec2.read_state(&env.world.vpc_id, &limits))?;
    assert_eq!(state.route_tables.len(), 4);
    rt.block_on(ec2.read_state(&env.world.vpc_id, &limits))?;
    assert_eq!(sessions(&env.moto, "refresh-test")?.len(), 1, "the second read used the cached credentials");
    let started = Instant::now();
    let mut reads = 0;
    let renewed = wait_for(Duration::from_secs(30), "the credentials to be renewed", || {
        reads += 1;
        let read = rt.block_on(ec2.read_state(&env.world.vpc_id, &limits));
        assert!(read.is_ok(), "a read failed after {:?}: {read:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(500));
        let n = sessions(&env.moto, "refresh-test").ok()?.len();
        (n >= 2).then_some(n)
    })?;
    assert_eq!(renewed, 2, "one renewal");
    assert!(reads > 1, "reads in between used the cached credentials");

    // Without the role the same client setup sees no such VPC (the dummy keys' account).
    let own = rt.block_on(Ec2::connect_as(vpcrouter_tests::world::REGION, None, std::sync::Arc::new(())));
    let err = rt.block_on(own.read_state(&env.world.vpc_id, &limits)).expect_err("not in this account");
    assert!(matches!(err, Ec2Error::VpcNotFound { .. }), "{err:?}");
    Ok(())
}
