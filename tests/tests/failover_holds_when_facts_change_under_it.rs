//! A failover stays right when facts change under it: a second router failing mid-wave, reads lagging writes.
//!
//! Through moto and the EC2 model proxy. The two run side by side (each in a moto and a
//! daemon of its own).

mod a_router_failing_mid_failover_gets_no_late_write {
    //! A second router failing while a failover's writes are still going out: no write onto it
    //! starts more than one write latency after its failure is reported, and the routes end on
    //! the router left, each written at most once more than it had to be.
    //!
    //! World (`vpcrouter_tests::bench::Bed`): 10 subnets, each with its own route table; routers
    //! A 127.0.1.10, B 127.0.2.10, C 127.0.3.10; six CIDRs, each to `[A, B, C]`, on A in every
    //! table at start: 60 routes. vpcrouter talks to moto through the fault proxy with the EC2
    //! model, its write bucket made small (10 burst, 5 per second; vpcrouter's client limits the
    //! same), so that moving the 60 routes takes about 10 s. vpcrouter picks uniformly among the
    //! healthy candidates, so C is marked failed at first: A's routes all go to B. A fails (t0);
    //! 2 s later B fails and C is back (B's report, tB), while most of the writes onto B have not
    //! started.

    use std::time::{Duration, Instant};

    use vpcrouter_tests::bench::{daemon_args, Bed};
    use vpcrouter_tests::ec2model::{Bucket, Model};
    use vpcrouter_tests::faultproxy::{Call, FaultProxy};
    use vpcrouter_tests::wait_for;

    const CIDRS: usize = 6;
    const TABLES: usize = 10;
    /// When B fails, after A.
    const SECOND_AFTER: Duration = Duration::from_secs(2);
    /// Slack on top of one write latency for a write onto B after its report (the `file`
    /// plugin's read, the engine's reaction, scheduling).
    const MARGIN: Duration = Duration::from_millis(300);

    /// What the proxy saw from t0 on.
    struct Writes {
        /// Route writes (create or replace) forwarded to moto.
        total: usize,
        /// Of those, onto B and arrived before tB + write latency + margin.
        onto_b_in_time: usize,
        /// Route writes onto B (forwarded or not) that arrived later than that: (arrival after
        /// tB, table, CIDR).
        onto_b_late: Vec<(Duration, String, String)>,
        /// DeleteRoute calls.
        deletes: usize,
    }

    fn writes(calls: &[Call], b_ids: &[&str], t0: Instant, tb: Instant, deadline: Instant) -> Writes {
        let since: Vec<&Call> = calls.iter().filter(|c| c.at >= t0).collect();
        let route_writes = || since.iter().filter(|c| c.is_route_write());
        let onto_b = || route_writes().filter(|c| c.target().is_some_and(|t| b_ids.contains(&t)));
        let onto_b_late = onto_b()
            .filter(|c| c.at > deadline)
            .map(|c| {
                let (rtb, cidr) = c.route().unwrap_or(("?", "?"));
                (c.at.saturating_duration_since(tb), rtb.to_string(), cidr.to_string())
            })
            .collect();
        Writes {
            total: route_writes().filter(|c| c.forwarded()).count(),
            onto_b_in_time: onto_b().filter(|c| c.forwarded() && c.at <= deadline).count(),
            onto_b_late,
            deletes: since.iter().filter(|c| c.action == "DeleteRoute").count(),
        }
    }

    #[test]
    fn writes_onto_a_router_that_fails_mid_failover_stop_within_one_write_latency() -> anyhow::Result<()> {
        let bed = Bed::build(CIDRS, TABLES, 3)?;
        let n = bed.n();
        let model = Model { write_bucket: Bucket { burst: 10, rate: 5.0 }, ..Model::documented() };
        let proxy = FaultProxy::start_model(&bed.moto.endpoint, model)?;
        let (a, b, c) = (bed.router(0), bed.router(1), bed.router(2));
        bed.fail(&[c])?;
        let args = daemon_args(&bed.vpc.id, &bed.spec, &bed.health, Some(&model));
        let d = bed.start_daemon(&proxy, &args, model, Duration::from_millis(500))?;

        let t0 = Instant::now();
        bed.fail(&[a, c])?;
        std::thread::sleep(SECOND_AFTER.saturating_sub(t0.elapsed()));
        bed.fail(&[a, b])?;
        let tb = Instant::now();
        let at_report = bed.placement()?;
        let on_c = || bed.placement().ok()?.get(&Some(c)).copied().filter(|&k| k == n);
        let ended = wait_for(Duration::from_secs(30), "every route on C", on_c).map(|_| t0.elapsed());
        std::thread::sleep(Duration::from_secs(1)); // late writes are counted too

        let b_ids = bed.ids(1);
        let deadline = tb + model.write_latency + MARGIN;
        let w = writes(&proxy.calls(), &b_ids, t0, tb, deadline);
        let log = d.log();
        let failovers: Vec<&str> = log.lines().filter(|l| l.contains("failover:")).collect();
        let figures = format!(
            "{n} routes on A at t0; at B's report (t0 + {SECOND_AFTER:?}) {at_report:?}; {} route writes forwarded \
         since t0, {} onto B before its report + {:?} + {MARGIN:?}, {} onto B after; {} deletes; \
         every route on C after {ended:?}\nfailover lines:\n{}",
            w.total,
            w.onto_b_in_time,
            model.write_latency,
            w.onto_b_late.len(),
            w.deletes,
            failovers.join("\n")
        );
        let late: Vec<String> =
            w.onto_b_late.iter().take(10).map(|(t, r, c)| format!("{c} in {r} at tB + {t:?}")).collect();
        assert!(
        w.onto_b_late.is_empty(),
        "{} writes onto B started after its failure was reported (+ one write latency + {MARGIN:?}), e.g. {}\n{figures}",
        w.onto_b_late.len(),
        late.join(", ")
    );
        let ended = ended.map_err(|e| anyhow::anyhow!("{e}\n{figures}\n--- log ---\n{log}"))?;
        assert!(
            w.total <= n + w.onto_b_in_time,
            "{} route writes, more than the {n} routes that had to leave A plus the {} written onto B before its \
         report\n{figures}",
            w.total,
            w.onto_b_in_time
        );
        assert_eq!(w.deletes, 0, "{figures}");
        eprintln!("second failure during a failover: {figures}\nended after {ended:?}");
        Ok(())
    }
}

mod lagging_reads_cause_no_second_write {
    //! Reads that lag writes, as EC2's do (eventual consistency): a route vpcrouter has written
    //! and EC2 acknowledged is not written again because a read still shows the old target, and
    //! once the consistency window has passed, a route changed behind vpcrouter's back is
    //! repaired all the same.
    //!
    //! World (`vpcrouter_tests::bench::Bed`): 10 subnets, each with its own route table; routers
    //! A 127.0.1.10, B 127.0.2.10, C 127.0.3.10; four CIDRs, each to `[A, B, C]`, on A in every
    //! table at start: 40 routes. vpcrouter talks to moto through the fault proxy with the
    //! documented EC2 model and reads lagging writes by 2.5 s (`FaultProxy::set_read_lag`: until
    //! 2.5 s after the last write, route table reads answer the view from before the first);
    //! it rechecks the tables every 5 s (the shortest recheck allowed), so it may read during
    //! the lag, and runs with `--consistency-window 5`.

    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use vpcrouter_tests::bench::{cidrs, daemon_args_recheck, Bed};
    use vpcrouter_tests::ec2model::Model;
    use vpcrouter_tests::faultproxy::{Call, FaultProxy};
    use vpcrouter_tests::wait_for;

    const CIDRS: usize = 4;
    const TABLES: usize = 10;
    /// How long reads lag writes.
    const LAG: Duration = Duration::from_millis(2500);
    /// The time after A's failure in which the route writes are counted: well past the lag and
    /// the consistency window (5 s) after the failover's writes.
    const WINDOW: Duration = Duration::from_secs(8);

    /// Route writes (create or replace) that arrived in `[from, to]`, per (table, CIDR).
    fn per_route(calls: &[Call], from: Instant, to: Instant) -> BTreeMap<(String, String), usize> {
        let mut out = BTreeMap::new();
        for c in calls.iter().filter(|c| c.at >= from && c.at <= to && c.is_route_write() && c.forwarded()) {
            let (rtb, cidr) = c.route().unwrap_or(("?", "?"));
            *out.entry((rtb.to_string(), cidr.to_string())).or_insert(0) += 1;
        }
        out
    }

    /// The routes written more than once: how many, and the first few as `CIDR in rtb ×k`.
    fn twice(writes: &BTreeMap<(String, String), usize>) -> (usize, Vec<String>) {
        let more: Vec<String> =
            writes.iter().filter(|(_, &k)| k > 1).map(|((r, c), k)| format!("{c} in {r} ×{k}")).collect();
        (more.len(), more.into_iter().take(6).collect())
    }

    #[test]
    fn reads_that_lag_writes_cause_no_second_write_and_an_outside_change_is_still_repaired() -> anyhow::Result<()> {
        let bed = Bed::build(CIDRS, TABLES, 3)?;
        let n = bed.n();
        let model = Model::documented();
        let proxy = FaultProxy::start_model(&bed.moto.endpoint, model)?;
        proxy.set_read_lag(Some(LAG));
        let a = bed.router(0);
        let mut args = daemon_args_recheck(&bed.vpc.id, &bed.spec, &bed.health, Some(&model), 5);
        args.extend(["--consistency-window", "5"].map(String::from));
        let d = bed.start_daemon(&proxy, &args, model, Duration::from_millis(500))?;

        // A fails: each of the 40 routes is written once, whatever the lagging reads show.
        let t0 = Instant::now();
        bed.fail(&[a])?;
        std::thread::sleep(WINDOW.saturating_sub(t0.elapsed()));
        let writes = per_route(&proxy.calls(), t0, t0 + WINDOW);
        let total: usize = writes.values().sum();
        let placed = bed.placement()?;
        let lagged = proxy.tally_since(t0).lagged_reads;
        let figures = format!(
        "{total} route writes in the {WINDOW:?} after A failed for {n} routes ({} distinct), {lagged} reads answered \
         lagged; routes now {placed:?}; routes written more than once: {:?}",
        writes.len(),
        twice(&writes)
    );
        assert!(twice(&writes).0 == 0 && total == n, "want each of the {n} routes written exactly once: {figures}");
        assert_eq!(placed.get(&Some(a)).copied().unwrap_or(0), 0, "routes left on A: {figures}\n{}", d.log());

        // Behind vpcrouter's back, one route is put back on the failed A: after the window, the
        // read is believed and the route repaired, with one write (the reads lag that one too).
        let (rtb, cidr) = (bed.vpc.tables[0].clone(), cidrs(CIDRS)[0].clone());
        let call = bed.ec2.replace_route().route_table_id(&rtb).destination_cidr_block(&cidr);
        bed.rt.block_on(call.instance_id(&bed.vpc.routers[0].instance).send())?;
        let changed = Instant::now();
        let off_a = || bed.placement().ok().filter(|p| p.get(&Some(a)).copied().unwrap_or(0) == 0);
        wait_for(Duration::from_secs(10), &format!("{cidr} in {rtb}, put on the failed A, to be repaired"), off_a)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e}; writes since the change: {:?}\n{}",
                    per_route(&proxy.calls(), changed, Instant::now()),
                    d.log()
                )
            })?;
        let repaired = changed.elapsed();
        std::thread::sleep(LAG + Duration::from_millis(500));
        let repairs = per_route(&proxy.calls(), changed, Instant::now());
        assert_eq!(
            repairs.values().sum::<usize>(),
            1,
            "want one write (the repair, after {repaired:?}) since the outside change: {repairs:?}"
        );
        eprintln!("lagging reads: {figures}; outside change repaired after {repaired:?} with {repairs:?}");
        Ok(())
    }
}
