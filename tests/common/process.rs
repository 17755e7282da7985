//! What the kernel says of a process the tests started (a server, a worker).

/// The CPU time process `pid` has used, from `/proc/PID/stat` (user + system).
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // After the command's name, in parentheses: fields from the third on.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .expect("a stat line")
        .1
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Linux reports clock ticks of 1/100 s.
    std::time::Duration::from_millis(ticks * 10)
}
