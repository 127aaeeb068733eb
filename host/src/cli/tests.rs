//! The command line's parsing and checks.
use std::path::PathBuf;

use vpcrouter_ec2::limits::LimitsConfig;
use vpcrouter_planner::model::TableSelection;

use super::cluster::cluster_options;
use super::ec2::{ec2_limits, parse_rate, role_options};
use super::plugins::{prescan, shared_host_option};
use super::routes::{check_recheck, failback_policy, parse_ignore_routes, table_selection, MAX_FAILBACK_AFTER};
use super::*;

fn argv(s: &str) -> Vec<String> {
    std::iter::once("vpcrouter").chain(s.split_whitespace()).map(String::from).collect()
}

#[test]
fn prescan_understands_all_spellings() {
    let s = prescan(&argv("-mconfigfile --health=tcp --plugin-dir /a --plugin-dir=/b -f x"));
    assert_eq!(s.mode.as_deref(), Some("configfile"));
    assert_eq!(s.health.as_deref(), Some("tcp"));
    assert_eq!(s.plugin_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    let s = prescan(&argv("--mode http -H always --list-plugins -- -m x"));
    assert_eq!((s.mode.as_deref(), s.health.as_deref(), s.list), (Some("http"), Some("always"), true));
    let s = prescan(&argv("-m http --notify exec --notify=sns --notify-exec-command x"));
    assert_eq!(s.notify, ["exec", "sns"]);
}

#[test]
fn a_notifier_named_twice_is_one_usage_error_before_anything_loads() {
    let empty = tempfile::tempdir().unwrap();
    let search = SearchPath::new(&[empty.path().to_path_buf()], false);
    for line in ["-m http --notify exec --notify webhook --notify exec", "-m http --notify sns --notify=sns"] {
        let scan = prescan(&argv(line));
        let err = super::plugins::load(&Loader::default(), &search, &argv(line), &scan).err().unwrap();
        assert_eq!(err.status, 2, "{line}");
        assert!(err.message.contains("is given twice") && !err.message.contains('\n'), "{line}: {}", err.message);
    }
}

#[test]
fn ignore_routes_as_in_the_original() {
    let v6 = parse_ignore_routes(Some("::,2001:db8::/32,2001:db8::1")).unwrap();
    let v6: Vec<String> = v6.iter().map(ToString::to_string).collect();
    assert_eq!(v6, ["::/0", "2001:db8::/32", "2001:db8::1/128"]);
    assert!(parse_ignore_routes(Some("2001:db8::1/64")).unwrap_err().contains("host bits are set"));
    let got = parse_ignore_routes(Some("10.1.1.1,10.1.2.0/24,0.0.0.0/0, 0.0.0.0")).unwrap();
    let text: Vec<String> = got.iter().map(|c| c.to_string()).collect();
    assert_eq!(text, ["10.1.1.1/32", "10.1.2.0/24", "0.0.0.0/0", "0.0.0.0/0"]);
    for bad in ["10.1.1", "10.1.1.1/16", "101.2.3/64", "10.0.0.0/8,", ":::1", "2001:db8::/129"] {
        assert!(parse_ignore_routes(Some(bad)).is_err(), "{bad}");
    }
}

#[test]
fn route_tables_by_id_or_by_tags_but_not_both() {
    let matches = |args: &str| base_command().try_get_matches_from(argv(args));
    let selection = |args: &str| table_selection(&matches(args).unwrap());
    assert_eq!(selection("-m x"), TableSelection::Serving);
    assert_eq!(
        selection("-m x --route-tables rtb-0a1,rtb-2b --zone-affinity"),
        TableSelection::Ids(["rtb-0a1".to_string(), "rtb-2b".to_string()].into())
    );
    assert_eq!(
        selection("-m x --route-table-tag vpcrouter:managed=true --route-table-tag team=net=a --route-table-tag k="),
        TableSelection::Tagged(vec![
            ("vpcrouter:managed".into(), "true".into()),
            ("team".into(), "net=a".into()),
            ("k".into(), String::new()),
        ])
    );
    assert!(matches("-m x --zone-affinity").unwrap().get_flag("zone_affinity"));
    let refused = |args: &str| matches(args).unwrap_err().render().to_string();
    let e = refused("-m x --route-table-tag vpcrouter:managed");
    assert!(e.contains("'vpcrouter:managed' has no '=': give KEY=VALUE"), "{e}");
    assert!(refused("-m x --route-table-tag =true").contains("the tag key must have 1 to 128 characters"));
    let e = refused("-m x --route-tables rtb-1,subnet-2");
    assert!(e.contains("'subnet-2' is not a route table id"), "{e}");
    assert!(refused("-m x --route-tables rtb-").contains("'rtb-' is not a route table id"));
    let e = refused("-m x --route-tables rtb-1 --route-table-tag a=b");
    assert!(e.contains("cannot be used with"), "{e}");
}

#[test]
fn man_page_and_completions_cover_the_main_options() {
    let man = generate("man").unwrap();
    assert!(man.contains(".TH vpcrouter") && man.contains("route_recheck_interval"), "{man}");
    for shell in ["bash", "zsh", "fish"] {
        assert!(generate(shell).unwrap().contains("ignore_routes"), "{shell}");
    }
    assert_eq!(generate("tcsh").unwrap_err().status, 2);
}

#[test]
fn drain_subcommands_parse_only_as_the_first_word() {
    use crate::client::{Action, Target};
    let loader = Loader::default();
    let parsed = |s: &str| match parse(&argv(s), &loader) {
        Ok(Invocation::Client(c)) => Ok(c),
        Ok(_) => panic!("{s}: not a client subcommand"),
        Err(e) => Err(e),
    };
    let c = parsed("drain 10.0.0.1 --reason patching -p 1234 --http-token-file /t").unwrap();
    assert_eq!(c.action, Action::Drain { ip: "10.0.0.1".parse().unwrap(), reason: Some("patching".into()) });
    assert_eq!(
        (c.target.base(), c.target.token_file),
        ("http://127.0.0.1:1234".to_string(), Some(PathBuf::from("/t")))
    );
    let c = parsed("undrain 10.0.0.2 --url https://r:8443 --tls-ca /ca.pem").unwrap();
    assert_eq!(c.action, Action::Undrain { ip: "10.0.0.2".parse().unwrap() });
    assert_eq!(c.target, Target { tls_ca: Some("/ca.pem".into()), ..Target::from_url("https://r:8443").unwrap() });
    assert_eq!(parsed("drains --json -a 0.0.0.0").unwrap().action, Action::List { json: true });
    let c = parsed("drains --url https://r:8443 --tls-cert /c.pem --tls-key /k.pem").unwrap();
    assert_eq!(c.target.client_cert, Some(("/c.pem".into(), "/k.pem".into())));
    assert_eq!(parsed("drains --tls-cert /c.pem").unwrap_err().status, 2, "--tls-cert needs --tls-key");
    let e = parsed("drain 10.0.0.300").unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (2, "error: '10.0.0.300' is not an IPv4 address (name the router by its IP in the route spec)")
    );
    assert_eq!(parsed("drains --url 127.0.0.1:1").unwrap_err().status, 2);
    assert_eq!(parsed("drains --url http://a:1 -p 2").unwrap_err().status, 2, "--url or -a/-p");
    assert_eq!(parsed("drain").unwrap_err().status, 2);
    assert_eq!(parsed("drain --help").unwrap_err().status, 0);
    // The daemon's command line is unchanged: `drain` elsewhere is not a subcommand.
    assert!(base_command().try_get_matches_from(argv("-m x drain")).is_err());
    let m = base_command().try_get_matches_from(argv("-m x --state-dir /s")).unwrap();
    assert_eq!(m.get_one::<PathBuf>("state_dir"), Some(&PathBuf::from("/s")));
}

#[test]
fn status_parses_json_and_watch_with_its_default_and_bounds() {
    use crate::client::Action;
    use std::time::Duration;
    let loader = Loader::default();
    let parsed = |s: &str| match parse(&argv(s), &loader) {
        Ok(Invocation::Client(c)) => Ok(c),
        Ok(_) => panic!("{s}: not a client subcommand"),
        Err(e) => Err(e),
    };
    assert_eq!(parsed("status").unwrap().action, Action::Status { json: false, watch: None });
    assert_eq!(parsed("status --json -p 9000").unwrap().action, Action::Status { json: true, watch: None });
    let watch = |line: &str| match parsed(line).map(|c| c.action) {
        Ok(Action::Status { watch, .. }) => Ok(watch),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.message),
    };
    assert_eq!(watch("status --watch"), Ok(Some(Duration::from_secs(2))));
    assert_eq!(watch("status --watch 0.5"), Ok(Some(Duration::from_millis(500))));
    assert_eq!(watch("status -w 10 -a 10.0.0.1"), Ok(Some(Duration::from_secs(10))));
    let e = watch("status --watch 0").unwrap_err();
    assert!(e.contains("'0' is not a number of seconds from 0.2 to 3600"), "{e}");
    assert!(parsed("status --watch --json").is_err(), "JSON is printed once");
}

#[test]
fn the_man_page_covers_the_drain_subcommands_and_the_state_dir() {
    let man = generate("man").unwrap();
    for word in ["drain", "undrain", "drains", "watch", "state\\-dir"] {
        assert!(man.contains(word), "{word}: {man}");
    }
    assert!(generate("bash").unwrap().contains("undrain"));
}

#[test]
fn etcd_endpoints_and_options_are_checked() {
    let opts = |args: &str| cluster_options(&base_command().try_get_matches_from(argv(args)).unwrap());
    let c = opts("-m x --cluster-etcd http://127.0.0.1:2379,10.0.0.2:2379 --instance-id a").unwrap().unwrap();
    assert_eq!(c.conn.urls(), ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]);
    let err = |args: &str| opts(args).unwrap_err().message;
    assert_eq!(
        err("-m x --cluster-etcd , --instance-id a"),
        "error: --cluster-etcd: no etcd endpoint given; pass the etcd client URLs, comma-separated, e.g. \
         https://10.0.0.1:2379,https://10.0.0.2:2379"
    );
    assert!(err("-m x --cluster-etcd http://a:x --instance-id a").contains("'x' is not a port"));
    assert_eq!(
        err("-m x --cluster-etcd a:1 --etcd-cert /c --instance-id a"),
        "error: --etcd-cert is given without --etcd-key; pass both: the client certificate and its private key"
    );
    assert_eq!(
        err("-m x --cluster-etcd a:1 --etcd-cacert /nonexistent/ca.pem --instance-id a"),
        "error: --etcd-cacert /nonexistent/ca.pem: cannot read it: No such file or directory (os error 2)"
    );
    assert!(vpcrouter_cluster::check_name("--instance-id", "i-0abc.eu_1:2").is_ok());
    for bad in ["", "a/b", "a b", &"x".repeat(129)] {
        assert!(vpcrouter_cluster::check_name("--instance-id", bad).is_err(), "{bad}");
    }
}

#[test]
fn a_plugin_may_declare_the_shared_etcd_options_and_gets_the_hosts_values() {
    let cmd = base_command();
    let etcd: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).filter(|l| l.starts_with("etcd-")).collect();
    assert_eq!(etcd, ["etcd-cacert", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file"]);
    let help = base_command().render_help().to_string();
    assert!(help.contains("etcd connection (cluster mode and the etcd watcher):"), "{help}");
    assert!(shared_host_option("etcd-cacert") && !shared_host_option("etcd_key") && !shared_host_option("port"));
}

#[test]
fn cluster_options_default_to_off_and_need_cluster_etcd() {
    let m = base_command().try_get_matches_from(argv("-m x")).unwrap();
    assert!(cluster_options(&m).unwrap().is_none());
    assert!(base_command().try_get_matches_from(argv("-m x --health-quorum any")).is_err());
    let m = base_command()
        .try_get_matches_from(argv("-m x --cluster-etcd 127.0.0.1:2379 --instance-id a --health-quorum all"))
        .unwrap();
    let c = cluster_options(&m).unwrap().unwrap();
    assert_eq!((c.instance_id.as_str(), c.lease_ttl, c.quorum, c.name), ("a", 5, vpcrouter_cluster::Quorum::All, None));
    assert_eq!(c.conn.urls(), ["http://127.0.0.1:2379"]);
}

#[test]
fn main_option_checks() {
    assert!(check_recheck(0).is_ok() && check_recheck(5).is_ok());
    assert_eq!(check_recheck(4).unwrap_err().status, 2);
    assert!(check_address("localhost").is_ok() && check_address("0.0.0.0").is_ok() && check_address("::1").is_ok());
    assert!(check_address("999.9").is_err() && check_address("example.com").is_err());
}

#[test]
fn ec2_limits_default_to_the_documented_buckets_and_are_checked() {
    let m = base_command().try_get_matches_from(argv("-m http")).unwrap();
    assert_eq!(ec2_limits(&m), LimitsConfig::default());
    let m = base_command()
        .try_get_matches_from(argv("-m http --ec2-write-burst 20 --ec2-write-rate 2.5 --ec2-read-burst 40 --ec2-read-rate 8 --ec2-max-in-flight 4"))
        .unwrap();
    let got = ec2_limits(&m);
    assert_eq!(
        (got.write.burst, got.write.rate, got.read.burst, got.read.rate, got.max_in_flight),
        (20, 2.5, 40, 8.0, 4)
    );
    for bad in [
        "--ec2-write-rate 0", "--ec2-write-rate=-1", "--ec2-read-rate nan", "--ec2-write-rate x",
        "--ec2-write-burst 0", "--ec2-max-in-flight 0",
    ] {
        let err = base_command().try_get_matches_from(argv(&format!("-m http {bad}"))).expect_err(bad);
        assert!(err.render().to_string().contains("ec2-"), "{bad}: {}", err.render());
    }
    assert!(parse_rate("1e9").unwrap_err().contains("out of range"));
}

#[test]
fn role_options_are_checked_at_the_edge() {
    let opts = |args: &str| role_options(&base_command().try_get_matches_from(argv(args)).unwrap());
    assert!(opts("-m x").unwrap().is_none());
    let r = opts("-m x --role-arn arn:aws:iam::222222222222:role/rt --role-session-name s-1 --role-external-id ab-12")
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.arn.as_str(), r.session_name.as_str(), r.external_id.as_deref(), r.session_length),
        ("arn:aws:iam::222222222222:role/rt", "s-1", Some("ab-12"), None)
    );
    let r = opts("-m x --role-arn arn:aws:iam::222222222222:role/rt --cluster-etcd e:1 --instance-id node/1")
        .unwrap()
        .unwrap();
    assert_eq!(r.session_name, "vpcrouter-node-1");
    let err = |args: &str| opts(args).unwrap_err();
    let e = err("-m x --role-arn arn:aws:iam::2222:role/rt");
    assert_eq!(e.status, 2);
    assert!(e.message.starts_with("error: --role-arn: 'arn:aws:iam::2222:role/rt' is not an IAM role ARN"));
    assert!(!e.message.trim_end().contains('\n'), "{}", e.message);
    assert!(err("-m x --role-arn arn:aws:iam::222222222222:role/rt --role-session-name a/b")
        .message
        .starts_with("error: --role-session-name: 'a/b' is not a role session name"));
    assert!(err("-m x --role-arn arn:aws:iam::222222222222:role/rt --role-external-id x")
        .message
        .starts_with("error: --role-external-id: the external id is not usable"));
    for needs_arn in ["--role-session-name s-1", "--role-external-id ab-12"] {
        assert!(base_command().try_get_matches_from(argv(&format!("-m x {needs_arn}"))).is_err(), "{needs_arn}");
    }
}

#[test]
fn security_options_come_in_the_right_combinations() {
    let ok = |s: &str| base_command().try_get_matches_from(argv(&format!("-m http {s}"))).is_ok();
    assert!(ok("--http-token-file t --http-auth-all") && ok("--tls-cert c --tls-key k --tls-client-ca ca"));
    assert!(ok("--http-allow-unauthenticated") && ok("--tls-cert c --tls-key k"));
    for bad in [
        "--http-auth-all",
        "--tls-cert c",
        "--tls-key k",
        "--tls-client-ca ca",
        "--tls-key k --tls-client-ca ca",
        "--http-token-file t --http-allow-unauthenticated",
    ] {
        assert!(!ok(bad), "{bad}");
    }
}

#[test]
fn failback_is_never_by_default_and_its_hold_down_needs_preferred() {
    use std::time::Duration;
    use vpcrouter_planner::plan::FailbackPolicy;
    let policy = |s: &str| {
        let m = base_command().try_get_matches_from(argv(&format!("-m http {s}"))).map_err(|e| e.to_string())?;
        failback_policy(&m).map_err(|e| e.message)
    };
    assert_eq!(policy(""), Ok(FailbackPolicy::Never));
    assert_eq!(policy("--failback never"), Ok(FailbackPolicy::Never));
    assert_eq!(policy("--failback preferred"), Ok(FailbackPolicy::Preferred { after: Duration::from_secs(300) }));
    assert_eq!(
        policy("--failback preferred --failback-after 2"),
        Ok(FailbackPolicy::Preferred { after: Duration::from_secs(2) })
    );
    let err = policy("--failback-after 60").unwrap_err();
    assert!(err.contains("--failback-after only applies with --failback preferred"), "{err}");
    assert!(policy("--failback never --failback-after 60").is_err());
    for bad in ["--failback sometimes", "--failback preferred --failback-after 0", "--failback-after x"] {
        assert!(policy(bad).is_err(), "{bad}");
    }
    assert!(policy(&format!("--failback preferred --failback-after {}", MAX_FAILBACK_AFTER + 1)).is_err());
}

#[test]
fn base_command_parses_the_original_defaults() {
    let m = base_command().try_get_matches_from(argv("-l foo -v 123 -r foo -m http")).unwrap();
    assert_eq!(m.get_one::<String>("health").unwrap(), "icmpecho");
    assert_eq!(*m.get_one::<u16>("port").unwrap(), 33289);
    assert_eq!(*m.get_one::<u64>("route_recheck_interval").unwrap(), 30);
    assert_eq!(m.get_one::<String>("address").unwrap(), "localhost");
    for bad in
        ["-l", "-l foo", "-l foo -v 123", "-m http -p 99999", "-m http -p 0", "-m http --route_recheck_interval x"]
    {
        assert!(base_command().try_get_matches_from(argv(bad)).is_err(), "{bad}");
    }
    assert!(base_command().try_get_matches_from(argv("-m http -p 65535")).is_ok());
}
