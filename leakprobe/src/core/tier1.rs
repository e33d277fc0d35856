//! Tier 1: which processes get pid-scoped malloc probes, since when, why, and until when; and the CPU budget
//! that bounds what they cost.
//!
//! Pure: the daemon feeds it tier 0's growing processes, requests, and cost measurements with their times, and
//! carries out the [`Action`]s it returns (attach, detach, set a sampling interval).

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Ended escalations and budget actions kept for `status`.
pub const HISTORY: usize = 32;
/// The largest sampling interval the budget raises a process to before it detaches it instead.
pub const MAX_BUDGET_INTERVAL: u64 = 64 << 20;
/// Over the host budget, the busiest escalated process is detached only if its probes cost at least this
/// fraction of the host budget: shedding a process whose probes cost next to nothing would not help.
pub const MIN_SHED_FRACTION: f64 = 0.1;
/// Over the host budget, a process is shed only once the daemon has been over it at this many budget checks
/// in a row: a burst (the start-up scan, symbolizing a new binary) is not a steady cost, and shedding for it
/// would take the probes off a process the per-process budget had not even weighed over a whole check.
pub const HOST_OVER_CHECKS: u32 = 3;
/// The sampling interval the budget switches a fully traced process to first.
pub const FIRST_BUDGET_INTERVAL: u64 = 64 << 10;

/// How tier 1 is run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tier1Config {
    /// Escalate growing processes automatically (`--malloc-probes auto`).
    pub auto: bool,
    /// The most processes escalated at once (requests included).
    pub max_processes: usize,
    /// How long an automatic escalation lasts, in seconds.
    pub duration_s: f64,
    /// How long a process is not escalated again automatically after one ended, in seconds.
    pub cooldown_s: f64,
    /// Sampling interval of automatic escalations (0: every allocation).
    pub sample_interval: u64,
    /// Budget per traced process, as a fraction of one core.
    pub process_budget: f64,
    /// Budget of the whole daemon (probes of every tier and its own CPU), as a fraction of one core.
    pub host_budget: f64,
    /// Cost of one uprobe trap that BPF run-time statistics do not include (the breakpoint, the kernel
    /// entry and exit, emulation or single-step), in ns.
    pub trap_ns: f64,
}

impl Default for Tier1Config {
    fn default() -> Self {
        Self {
            auto: true,
            max_processes: 8,
            duration_s: 600.0,
            cooldown_s: 1800.0,
            sample_interval: 0,
            process_budget: 0.01,
            host_budget: 0.02,
            trap_ns: 600.0,
        }
    }
}

/// Why a process is escalated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Tier 0 saw its anonymous memory grow steadily.
    Auto,
    /// `leakprobe trace` asked.
    Request,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Request => "request",
        }
    }
}

/// One escalated process.
#[derive(Clone, Debug, PartialEq)]
pub struct Escalation {
    pub pid: u32,
    pub trigger: Trigger,
    /// Monotonic ns when the probes were attached.
    pub since_ns: u64,
    /// Monotonic ns when they are detached, if bounded.
    pub until_ns: Option<u64>,
    pub reason: String,
    /// Current sampling interval (0: every allocation).
    pub interval: u64,
    /// Estimated CPU of its probes over the last budget check, as a fraction of one core.
    pub cpu: f64,
    /// Allocator calls that reached its probes, in total.
    pub calls: u64,
}

/// An escalation that ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Ended {
    pub escalation: Escalation,
    pub ended_ns: u64,
    pub why: String,
}

/// What the daemon must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Attach the malloc-family probes to `pid` with sampling interval `interval`.
    Attach { pid: u32, interval: u64 },
    /// Set the sampling interval of `pid`.
    SetInterval { pid: u32, interval: u64 },
    /// Detach the probes of `pid`.
    Detach { pid: u32 },
}

/// A budget decision, kept for `status`.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetAction {
    pub ns: u64,
    pub pid: u32,
    pub action: String,
    pub why: String,
}

/// One cost measurement, deltas since the previous one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CostSample {
    /// Monotonic ns now.
    pub now_ns: u64,
    /// Seconds since the previous measurement.
    pub elapsed_s: f64,
    /// Allocator calls per process that reached a probe.
    pub calls: HashMap<u32, u64>,
    /// Run time of the uprobe programs, ns.
    pub uprobe_run_ns: u64,
    /// Runs of the uprobe programs.
    pub uprobe_runs: u64,
    /// Run time of the tracepoint programs (tier 0 and the lifecycle), ns.
    pub tracepoint_run_ns: u64,
    /// CPU the daemon itself used, seconds.
    pub daemon_cpu_s: f64,
}

/// The latest measured costs, as fractions of one core.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Costs {
    pub uprobes: f64,
    pub tracepoints: f64,
    pub daemon: f64,
}

impl Costs {
    pub fn total(&self) -> f64 {
        self.uprobes + self.tracepoints + self.daemon
    }
}

/// Tier 1's state.
#[derive(Debug)]
pub struct Tier1 {
    pub config: Tier1Config,
    active: BTreeMap<u32, Escalation>,
    ended: VecDeque<Ended>,
    /// Monotonic ns until which a process is not escalated automatically again.
    cooldown: HashMap<u32, u64>,
    actions: VecDeque<BudgetAction>,
    pub costs: Costs,
    /// Budget actions taken in total.
    pub budget_actions: u64,
    /// Budget checks in a row that found the daemon over the host budget.
    host_over: u32,
}

fn ns(seconds: f64) -> u64 {
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a positive duration")]
    let ns = (seconds.max(0.0) * 1e9) as u64;
    ns
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T) {
    list.push_back(item);
    while list.len() > HISTORY {
        list.pop_front();
    }
}

impl Tier1 {
    pub fn new(config: Tier1Config) -> Self {
        Self {
            config,
            active: BTreeMap::new(),
            ended: VecDeque::new(),
            cooldown: HashMap::new(),
            actions: VecDeque::new(),
            costs: Costs::default(),
            budget_actions: 0,
            host_over: 0,
        }
    }

    /// The escalated processes, by pid.
    pub fn active(&self) -> impl Iterator<Item = &Escalation> {
        self.active.values()
    }

    /// The escalation of `pid`, if any.
    pub fn get(&self, pid: u32) -> Option<&Escalation> {
        self.active.get(&pid)
    }

    /// Recently ended escalations, oldest first.
    pub fn ended(&self) -> impl DoubleEndedIterator<Item = &Ended> {
        self.ended.iter()
    }

    /// Recent budget actions, oldest first.
    pub fn budget_actions(&self) -> impl Iterator<Item = &BudgetAction> {
        self.actions.iter()
    }

    /// Starts an escalation (the caller has attached the probes).
    pub fn start(&mut self, escalation: Escalation) {
        self.cooldown.remove(&escalation.pid);
        self.active.insert(escalation.pid, escalation);
    }

    /// Ends the escalation of `pid` (the caller detaches), with why.
    pub fn end(&mut self, pid: u32, now_ns: u64, why: &str) -> Option<Escalation> {
        let escalation = self.active.remove(&pid)?;
        self.cooldown.insert(pid, now_ns + ns(self.config.cooldown_s));
        push_bounded(&mut self.ended, Ended { escalation: escalation.clone(), ended_ns: now_ns, why: why.to_owned() });
        Some(escalation)
    }

    /// A process is gone: its escalation ends and its cooldown is forgotten.
    pub fn gone(&mut self, pid: u32, now_ns: u64) -> bool {
        self.cooldown.remove(&pid);
        let ended = self.end(pid, now_ns, "the process exited or exec'd").is_some();
        self.cooldown.remove(&pid);
        ended
    }

    /// Whether a request for one more process fits.
    pub fn has_room(&self) -> bool {
        self.active.len() < self.config.max_processes
    }

    /// Automatic escalations to make now: growing processes (`(pid, rate bytes/s, R²)`, fastest first), not
    /// escalated, not cooling down, while there is room.
    pub fn candidates(&self, growing: &[(u32, f64, f64)], now_ns: u64) -> Vec<Escalation> {
        if !self.config.auto {
            return Vec::new();
        }
        let room = self.config.max_processes.saturating_sub(self.active.len());
        growing
            .iter()
            .filter(|(pid, ..)| !self.active.contains_key(pid))
            .filter(|(pid, ..)| self.cooldown.get(pid).is_none_or(|&until| now_ns >= until))
            .take(room)
            .map(|&(pid, rate, r2)| Escalation {
                pid,
                trigger: Trigger::Auto,
                since_ns: now_ns,
                until_ns: Some(now_ns + ns(self.config.duration_s)),
                reason: format!("anonymous memory grows steadily: {rate:.0} B/s, R² {r2:.2} (tier 0)"),
                interval: self.config.sample_interval,
                cpu: 0.0,
                calls: 0,
            })
            .collect()
    }

    /// Escalations whose time is up.
    pub fn expired(&self, now_ns: u64) -> Vec<u32> {
        self.active.values().filter(|e| e.until_ns.is_some_and(|until| now_ns >= until)).map(|e| e.pid).collect()
    }

    fn act(&mut self, now_ns: u64, pid: u32, action: String, why: String) {
        self.budget_actions += 1;
        push_bounded(&mut self.actions, BudgetAction { ns: now_ns, pid, action, why });
    }

    /// Measures the costs and keeps tier 1 within the budget: a process over its own budget gets a larger
    /// sampling interval (fully traced ones are first sampled at [`FIRST_BUDGET_INTERVAL`]), or its probes
    /// detached once the interval is at [`MAX_BUDGET_INTERVAL`] (each step multiplies it by 16); over the host
    /// budget at [`HOST_OVER_CHECKS`] checks in a row, the busiest escalated process is detached if its probes
    /// are a real share of the cost ([`MIN_SHED_FRACTION`]). Every decision is recorded.
    pub fn budget(&mut self, sample: &CostSample) -> Vec<Action> {
        let elapsed = sample.elapsed_s.max(1e-3);
        let total_calls: u64 = sample.calls.values().sum();
        #[expect(clippy::cast_precision_loss, reason = "ns and counts fit f64 closely enough")]
        let uprobe_ns = sample.uprobe_run_ns as f64 + sample.uprobe_runs as f64 * self.config.trap_ns;
        #[expect(clippy::cast_precision_loss, reason = "as above")]
        let tracepoint_ns = sample.tracepoint_run_ns as f64;
        self.costs = Costs {
            uprobes: uprobe_ns / 1e9 / elapsed,
            tracepoints: tracepoint_ns / 1e9 / elapsed,
            daemon: sample.daemon_cpu_s / elapsed,
        };
        // The uprobes' cost is shared out by each process's share of the calls.
        let mut busiest: Option<(u32, f64)> = None;
        let mut actions = Vec::new();
        let over: Vec<(u32, f64)> = self
            .active
            .values_mut()
            .map(|e| {
                let calls = sample.calls.get(&e.pid).copied().unwrap_or(0);
                e.calls += calls;
                #[expect(clippy::cast_precision_loss, reason = "a share")]
                let share = if total_calls == 0 { 0.0 } else { calls as f64 / total_calls as f64 };
                e.cpu = share * uprobe_ns / 1e9 / elapsed;
                (e.pid, e.cpu)
            })
            .collect();
        for (pid, cpu) in over {
            if busiest.is_none_or(|(_, most)| cpu > most) {
                busiest = Some((pid, cpu));
            }
            if cpu <= self.config.process_budget {
                continue;
            }
            let Some(interval) = self.active.get(&pid).map(|e| e.interval) else { continue };
            let why = format!(
                "its probes cost {:.2}% of a core, over the budget of {:.2}% per process",
                cpu * 100.0,
                self.config.process_budget * 100.0
            );
            if interval >= MAX_BUDGET_INTERVAL {
                self.act(sample.now_ns, pid, "detached".into(), why.clone());
                self.end(pid, sample.now_ns, &format!("CPU budget: {why}"));
                actions.push(Action::Detach { pid });
                continue;
            }
            let raised = if interval == 0 { FIRST_BUDGET_INTERVAL } else { (interval * 16).min(MAX_BUDGET_INTERVAL) };
            self.act(sample.now_ns, pid, format!("sampling interval raised to {raised} bytes"), why);
            if let Some(e) = self.active.get_mut(&pid) {
                e.interval = raised;
            }
            actions.push(Action::SetInterval { pid, interval: raised });
        }
        let total = self.costs.total();
        self.host_over = if total > self.config.host_budget { self.host_over.saturating_add(1) } else { 0 };
        if self.host_over >= HOST_OVER_CHECKS
            && let Some((pid, cpu)) = busiest.filter(|(_, cpu)| *cpu >= MIN_SHED_FRACTION * self.config.host_budget)
            && self.active.contains_key(&pid)
            && !actions.contains(&Action::Detach { pid })
        {
            let why = format!(
                "leakprobe costs {:.2}% of a core, over the host budget of {:.2}%; this process's probes {:.2}%",
                total * 100.0,
                self.config.host_budget * 100.0,
                cpu * 100.0
            );
            self.act(sample.now_ns, pid, "detached".into(), why.clone());
            self.end(pid, sample.now_ns, &format!("CPU budget: {why}"));
            actions.push(Action::Detach { pid });
            // The next process is weighed against the cost without this one's probes.
            self.host_over = 0;
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escalation(pid: u32, interval: u64) -> Escalation {
        Escalation {
            pid,
            trigger: Trigger::Request,
            since_ns: 0,
            until_ns: None,
            reason: "asked".into(),
            interval,
            cpu: 0.0,
            calls: 0,
        }
    }

    #[test]
    fn growing_processes_are_escalated_once_with_room_and_cooldown() {
        let config = Tier1Config { max_processes: 2, duration_s: 10.0, cooldown_s: 100.0, ..Tier1Config::default() };
        let mut tier1 = Tier1::new(config);
        let growing = [(1, 1e6, 0.99), (2, 1e5, 0.95), (3, 1e4, 0.9)];
        let chosen = tier1.candidates(&growing, 0);
        assert_eq!(chosen.iter().map(|e| e.pid).collect::<Vec<_>>(), vec![1, 2]);
        assert!(chosen[0].reason.contains("1000000 B/s"), "{}", chosen[0].reason);
        for e in chosen {
            tier1.start(e);
        }
        assert!(tier1.candidates(&growing, 1).is_empty(), "no room");
        assert_eq!(tier1.expired(10_000_000_000), vec![1, 2]);
        tier1.end(1, 10_000_000_000, "time is up");
        let next = tier1.candidates(&growing, 10_000_000_001);
        assert_eq!(next.iter().map(|e| e.pid).collect::<Vec<_>>(), vec![3], "1 cools down");
        assert_eq!(tier1.ended().count(), 1);
        assert!(Tier1::new(Tier1Config { auto: false, ..config }).candidates(&growing, 0).is_empty());
    }

    #[test]
    fn the_budget_raises_the_interval_then_detaches() {
        let config = Tier1Config { process_budget: 0.01, host_budget: 1.0, trap_ns: 0.0, ..Tier1Config::default() };
        let mut tier1 = Tier1::new(config);
        tier1.start(escalation(7, 0));
        tier1.start(escalation(8, 0));
        // 50 ms of probe time in one second, 9 in 10 calls from pid 7: 4.5% of a core for 7, 0.5% for 8.
        let sample = CostSample {
            now_ns: 1,
            elapsed_s: 1.0,
            calls: HashMap::from([(7, 900), (8, 100)]),
            uprobe_run_ns: 50_000_000,
            uprobe_runs: 1000,
            ..CostSample::default()
        };
        assert_eq!(tier1.budget(&sample), vec![Action::SetInterval { pid: 7, interval: FIRST_BUDGET_INTERVAL }]);
        assert!((tier1.get(7).expect("7").cpu - 0.045).abs() < 1e-9);
        assert_eq!(tier1.budget(&sample), vec![Action::SetInterval { pid: 7, interval: FIRST_BUDGET_INTERVAL * 16 }]);
        while tier1.get(7).is_some_and(|e| e.interval < MAX_BUDGET_INTERVAL) {
            tier1.budget(&sample);
        }
        assert_eq!(tier1.budget(&sample), vec![Action::Detach { pid: 7 }]);
        assert!(tier1.get(7).is_none());
        assert!(tier1.ended().any(|e| e.escalation.pid == 7 && e.why.contains("CPU budget")));
        assert!(tier1.budget_actions().all(|a| a.pid == 7));
    }

    #[test]
    fn over_the_host_budget_the_busiest_is_detached() {
        let config = Tier1Config { process_budget: 1.0, host_budget: 0.02, trap_ns: 0.0, ..Tier1Config::default() };
        let mut tier1 = Tier1::new(config);
        tier1.start(escalation(7, 0));
        tier1.start(escalation(8, 0));
        let sample = CostSample {
            now_ns: 1,
            elapsed_s: 1.0,
            calls: HashMap::from([(7, 100), (8, 900)]),
            uprobe_run_ns: 30_000_000,
            uprobe_runs: 1000,
            daemon_cpu_s: 0.001,
            ..CostSample::default()
        };
        // A burst over the host budget sheds nothing: only HOST_OVER_CHECKS checks in a row do.
        for _ in 1..HOST_OVER_CHECKS {
            assert!(tier1.budget(&sample).is_empty());
        }
        let calm = CostSample { uprobe_run_ns: 1_000, ..sample.clone() };
        assert!(tier1.budget(&calm).is_empty(), "under the budget: the count starts again");
        for _ in 1..HOST_OVER_CHECKS {
            assert!(tier1.budget(&sample).is_empty());
        }
        assert_eq!(tier1.budget(&sample), vec![Action::Detach { pid: 8 }]);
        assert!((tier1.costs.total() - 0.031).abs() < 1e-9);
        assert!(tier1.get(7).is_some());
        // Over the host budget through the daemon's own CPU: a process whose probes cost next to nothing stays.
        let cheap = CostSample { calls: HashMap::from([(7, 1)]), uprobe_run_ns: 1_000, daemon_cpu_s: 0.5, ..sample };
        for _ in 0..=HOST_OVER_CHECKS {
            assert!(tier1.budget(&cheap).is_empty());
        }
        assert!(tier1.costs.total() > 0.02 && tier1.get(7).is_some());
    }
}
