//! The loader and the deleter run nicer than the thread that made the engine, by
//! `BACKGROUND_NICENESS` (at most 19), and the ticker does not: background work takes
//! the time apply and read threads leave. Linux only (read from `/proc`). Its own test
//! binary: no other test's engine starts threads meanwhile.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, reason = "test code")]

use std::time::{Duration, Instant};

use ime_disk::MemDisk;
use ime_engine::{BACKGROUND_NICENESS, Config, Engine};

/// A thread's name and nice value, from its `stat`: the name is field 2, in parentheses
/// (it may hold spaces, but ends at the last ')'), the nice value field 19.
fn name_and_nice(stat: &str) -> Option<(String, i32)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    // After the name: state (3), ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt,
    // majflt, cmajflt, utime, stime, cutime, cstime, priority, nice (19).
    let nice = stat.get(close + 1..)?.split_whitespace().nth(16)?;
    Some((stat.get(open + 1..close)?.to_owned(), nice.parse().ok()?))
}

/// The nice value of this process's thread named `name` (the first one found).
fn nice_of(name: &str) -> Option<i32> {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter_map(|stat| name_and_nice(&stat))
        .find_map(|(n, nice)| (n == name).then_some(nice))
}

#[test]
fn the_loader_and_the_deleter_run_nicer_than_the_foreground() {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let (_, own) = name_and_nice(&stat).unwrap();
    let engine = Engine::new(MemDisk::new(), Config::default()).unwrap();
    let expected = (own + BACKGROUND_NICENESS).min(19);
    // Each thread lowers itself as it starts: wait for both to have done it.
    let start = Instant::now();
    let settled = loop {
        let seen = (nice_of("ime-loader"), nice_of("ime-deleter"));
        if seen == (Some(expected), Some(expected)) || start.elapsed() > Duration::from_secs(30) {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(settled, (Some(expected), Some(expected)));
    assert_eq!(
        nice_of("ime-ticker"),
        Some(own),
        "the ticker keeps the caller's priority"
    );
    engine.close();
}
