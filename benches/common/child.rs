//! Runs of this bench binary as a child process of its own, with settings in its environment.

use std::process::Command;

/// Runs this binary again with `envs` added to its environment; its standard output.
pub fn run_self<K: AsRef<str>, V: AsRef<str>>(envs: &[(K, V)]) -> String {
    let out = Command::new(std::env::current_exe().expect("bench binary path"))
        .envs(envs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
        .output()
        .expect("run the bench binary");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number after `key` in a child's output (`key` includes the separator, as in `"cpu "`).
pub fn number(text: &str, key: &str) -> f64 {
    text.split(key)
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{key}` in the child's output: {text}"))
}
