//! The daemon as a login service (its process control is in [`crate::process`]).
//!
//! Three service managers, one description ([`ServiceSpec`]):
//! - Linux: a systemd user unit (`$XDG_CONFIG_HOME/systemd/user/<label>.service`);
//! - macOS: a launchd agent (`~/Library/LaunchAgents/<reverse-dns>.plist`);
//! - Windows: a Task Scheduler task (its XML is kept under the config dir
//!   and registered with `schtasks`).
//!
//! Every renderer is a pure function compiled on every OS (so each is unit
//! tested here); only choosing one and talking to the manager depends on the
//! OS. Nothing here knows what the daemon does.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What to run at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Short name (`kache`): the unit name, the task name.
    pub label: String,
    pub description: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Extra environment (e.g. `KACHE_DIR` when the store is not the default).
    pub env: Vec<(String, String)>,
}

/// Where the user's files live; the caller reads these from its environment.
#[derive(Debug, Clone)]
pub struct UserDirs {
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME`, else `~/.config`.
    pub config_home: PathBuf,
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

/// The service manager of this OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    SystemdUser,
    Launchd,
    TaskScheduler,
}

impl Manager {
    pub fn current() -> Manager {
        if cfg!(target_os = "macos") {
            Manager::Launchd
        } else if cfg!(windows) {
            Manager::TaskScheduler
        } else {
            Manager::SystemdUser
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Manager::SystemdUser => "systemd user unit",
            Manager::Launchd => "launchd agent",
            Manager::TaskScheduler => "Task Scheduler task",
        }
    }
}

fn reverse_dns(label: &str) -> String {
    format!("build.kache.{label}")
}

/// The file that defines the service.
pub fn definition_path(spec_label: &str, dirs: &UserDirs) -> PathBuf {
    match Manager::current() {
        Manager::SystemdUser => dirs
            .config_home
            .join("systemd/user")
            .join(format!("{spec_label}.service")),
        Manager::Launchd => dirs
            .home
            .join("Library/LaunchAgents")
            .join(format!("{}.plist", reverse_dns(spec_label))),
        Manager::TaskScheduler => dirs
            .config_home
            .join("kache")
            .join(format!("{spec_label}-task.xml")),
    }
}

/// The definition text for this OS's manager.
pub fn render(spec: &ServiceSpec) -> String {
    match Manager::current() {
        Manager::SystemdUser => render_systemd(spec),
        Manager::Launchd => render_launchd(spec),
        Manager::TaskScheduler => render_task_scheduler(spec),
    }
}

fn systemd_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // `%` starts a specifier in unit files.
            '%' => out.push_str("%%"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A systemd user unit.
pub fn render_systemd(spec: &ServiceSpec) -> String {
    let mut exec = systemd_quote(&spec.program.to_string_lossy());
    for a in &spec.args {
        exec.push(' ');
        exec.push_str(&systemd_quote(a));
    }
    let mut env = String::new();
    for (k, v) in &spec.env {
        env.push_str(&format!(
            "Environment={}\n",
            systemd_quote(&format!("{k}={v}"))
        ));
    }
    format!(
        "# Written by `kache init`; `kache daemon uninstall` removes it.\n\
         [Unit]\n\
         Description={desc}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         {env}\
         Restart=on-failure\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        desc = spec.description,
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A launchd agent plist.
pub fn render_launchd(spec: &ServiceSpec) -> String {
    let mut args = format!(
        "    <string>{}</string>\n",
        xml_escape(&spec.program.to_string_lossy())
    );
    for a in &spec.args {
        args.push_str(&format!("    <string>{}</string>\n", xml_escape(a)));
    }
    let mut env = String::new();
    if !spec.env.is_empty() {
        env.push_str("  <key>EnvironmentVariables</key>\n  <dict>\n");
        for (k, v) in &spec.env {
            env.push_str(&format!(
                "    <key>{}</key>\n    <string>{}</string>\n",
                xml_escape(k),
                xml_escape(v)
            ));
        }
        env.push_str("  </dict>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n\
         <dict>\n  <key>Label</key>\n  <string>{label}</string>\n\
         \x20 <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n\
         {env}\
         \x20 <key>RunAtLoad</key>\n  <true/>\n\
         \x20 <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n\
         </dict>\n</plist>\n",
        label = reverse_dns(&spec.label),
    )
}

fn windows_quote(s: &str) -> String {
    if s.contains([' ', '\t', '"']) {
        format!("\"{}\"", s.replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

/// A Task Scheduler task (logon trigger) in the XML `schtasks /XML` takes.
/// A task has no environment of its own, so extra variables are set through
/// `cmd /c set …` in front of the program, only when there are any.
pub fn render_task_scheduler(spec: &ServiceSpec) -> String {
    let program = spec.program.to_string_lossy().into_owned();
    let mut args: Vec<String> = spec.args.iter().map(|a| windows_quote(a)).collect();
    let (command, arguments) = if spec.env.is_empty() {
        (program, args.join(" "))
    } else {
        let mut sets: Vec<String> = spec
            .env
            .iter()
            .map(|(k, v)| format!("set \"{k}={v}\" &&"))
            .collect();
        sets.push(windows_quote(&program));
        sets.append(&mut args);
        ("cmd.exe".to_string(), format!("/c {}", sets.join(" ")))
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n\
         <Task version=\"1.2\" xmlns=\"http://schemas.microsoft.com/windows/2004/02/mit/task\">\n\
         \x20 <RegistrationInfo><Description>{desc}</Description></RegistrationInfo>\n\
         \x20 <Triggers><LogonTrigger><Enabled>true</Enabled></LogonTrigger></Triggers>\n\
         \x20 <Settings>\n\
         \x20   <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>\n\
         \x20   <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>\n\
         \x20   <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>\n\
         \x20   <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>\n\
         \x20   <RestartOnFailure><Interval>PT1M</Interval><Count>3</Count></RestartOnFailure>\n\
         \x20 </Settings>\n\
         \x20 <Actions Context=\"Author\">\n\
         \x20   <Exec><Command>{cmd}</Command><Arguments>{args}</Arguments></Exec>\n\
         \x20 </Actions>\n\
         </Task>\n",
        desc = xml_escape(&spec.description),
        cmd = xml_escape(&command),
        args = xml_escape(&arguments),
    )
}

/// The program a definition written by [`render`] runs (for `doctor`:
/// "is the service pointing at this binary?").
pub fn installed_program(definition: &str) -> Option<PathBuf> {
    match Manager::current() {
        Manager::SystemdUser => {
            let line = definition
                .lines()
                .find_map(|l| l.trim().strip_prefix("ExecStart="))?;
            let line = line.trim();
            let first = if let Some(rest) = line.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = rest.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => out.push(c),
                    }
                }
                out.replace("%%", "%")
            } else {
                line.split_whitespace().next()?.to_string()
            };
            Some(PathBuf::from(first))
        }
        Manager::Launchd => {
            let start = definition.find("<array>")?;
            let rest = &definition[start..];
            let a = rest.find("<string>")? + "<string>".len();
            let b = rest[a..].find("</string>")? + a;
            Some(PathBuf::from(
                rest[a..b]
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            ))
        }
        Manager::TaskScheduler => {
            let a = definition.find("<Command>")? + "<Command>".len();
            let b = definition[a..].find("</Command>")? + a;
            Some(PathBuf::from(definition[a..b].replace("&amp;", "&")))
        }
    }
}

/// Writes the definition file if its content differs.
pub fn install(spec: &ServiceSpec, dirs: &UserDirs) -> io::Result<Change> {
    let path = definition_path(&spec.label, dirs);
    let text = render(spec);
    let change = match std::fs::read_to_string(&path) {
        Ok(old) if old == text => return Ok(Change::Unchanged),
        Ok(_) => Change::Updated,
        Err(_) => Change::Created,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, text)?;
    Ok(change)
}

/// Removes the definition file; true when there was one.
pub fn uninstall(spec_label: &str, dirs: &UserDirs) -> io::Result<bool> {
    match std::fs::remove_file(definition_path(spec_label, dirs)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs a manager command with a bounded wait; true on success.
fn run_bounded(program: &str, args: &[&str], limit: Duration) -> bool {
    let Ok(mut child) = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// True when this user's service manager can be talked to right now (a
/// container or CI job usually has no systemd user session).
/// `KACHE_SERVICE_MANAGER=none` forces false (tests, or users who want the
/// daemon started by hand).
pub fn manager_available() -> bool {
    if std::env::var("KACHE_SERVICE_MANAGER").is_ok_and(|v| v == "none") {
        return false;
    }
    match Manager::current() {
        Manager::SystemdUser => {
            Path::new("/run/systemd/system").is_dir()
                && run_bounded(
                    "systemctl",
                    &["--user", "show-environment"],
                    Duration::from_secs(3),
                )
        }
        Manager::Launchd => run_bounded("launchctl", &["version"], Duration::from_secs(3)),
        Manager::TaskScheduler => run_bounded("schtasks", &["/Query"], Duration::from_secs(5)),
    }
}

/// Enables the installed service and (re)starts it so it runs the current
/// definition.
pub fn activate(spec: &ServiceSpec, dirs: &UserDirs) -> io::Result<()> {
    let t = Duration::from_secs(15);
    let path = definition_path(&spec.label, dirs);
    let path_s = path.to_string_lossy().into_owned();
    let unit = format!("{}.service", spec.label);
    let ok = match Manager::current() {
        Manager::SystemdUser => {
            run_bounded("systemctl", &["--user", "daemon-reload"], t)
                && run_bounded("systemctl", &["--user", "enable", &unit], t)
                && run_bounded("systemctl", &["--user", "restart", &unit], t)
        }
        Manager::Launchd => {
            let _ = run_bounded("launchctl", &["unload", &path_s], t);
            run_bounded("launchctl", &["load", "-w", &path_s], t)
        }
        Manager::TaskScheduler => {
            run_bounded(
                "schtasks",
                &["/Create", "/F", "/TN", &spec.label, "/XML", &path_s],
                t,
            ) && run_bounded("schtasks", &["/Run", "/TN", &spec.label], t)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the {} could not be activated",
            Manager::current().name()
        )))
    }
}

/// Disables the service with its manager (best effort).
pub fn deactivate(spec_label: &str, dirs: &UserDirs) {
    let t = Duration::from_secs(15);
    let path = definition_path(spec_label, dirs);
    let unit = format!("{spec_label}.service");
    match Manager::current() {
        Manager::SystemdUser => {
            let _ = run_bounded("systemctl", &["--user", "disable", "--now", &unit], t);
            let _ = run_bounded("systemctl", &["--user", "daemon-reload"], t);
        }
        Manager::Launchd => {
            let _ = run_bounded("launchctl", &["unload", &path.to_string_lossy()], t);
        }
        Manager::TaskScheduler => {
            let _ = run_bounded("schtasks", &["/Delete", "/F", "/TN", spec_label], t);
        }
    }
}

/// A cheap fingerprint of a file (size, mtime, inode) to notice that a
/// binary was replaced.
pub fn file_fingerprint(path: &Path) -> Option<(u64, i128, u64)> {
    let m = std::fs::metadata(path).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    #[cfg(unix)]
    let ino = {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    };
    #[cfg(windows)]
    let ino = 0;
    Some((m.len(), mtime, ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            label: "kache".into(),
            description: "kache build cache daemon".into(),
            program: PathBuf::from("/opt/my tools/kache"),
            args: vec!["daemon".into(), "run".into()],
            env: vec![("KACHE_DIR".into(), "/data/kache".into())],
        }
    }

    #[test]
    fn systemd_unit_runs_the_binary_with_daemon_run() {
        let u = render_systemd(&spec());
        assert!(u.contains("ExecStart=\"/opt/my tools/kache\" \"daemon\" \"run\"\n"));
        assert!(u.contains("Environment=\"KACHE_DIR=/data/kache\"\n"));
        assert!(u.contains("WantedBy=default.target"));
    }

    #[test]
    fn launchd_plist_and_task_xml_name_the_binary() {
        let p = render_launchd(&spec());
        assert!(p.contains("<string>/opt/my tools/kache</string>"));
        assert!(p.contains("<string>build.kache.kache</string>"));
        assert!(p.contains("<key>KACHE_DIR</key>"));
        let t = render_task_scheduler(&spec());
        assert!(t.contains("<LogonTrigger>"));
        assert!(t.contains("&quot;/opt/my tools/kache&quot; daemon run"));
    }

    #[test]
    fn installed_program_reads_back_what_render_wrote() {
        assert_eq!(
            installed_program(&render(&spec())),
            if cfg!(windows) {
                Some(PathBuf::from("cmd.exe"))
            } else {
                Some(spec().program)
            }
        );
    }

    #[test]
    fn install_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let dirs = UserDirs {
            home: d.path().to_path_buf(),
            config_home: d.path().join(".config"),
        };
        assert_eq!(install(&spec(), &dirs).unwrap(), Change::Created);
        assert_eq!(install(&spec(), &dirs).unwrap(), Change::Unchanged);
        assert!(uninstall("kache", &dirs).unwrap());
        assert!(!uninstall("kache", &dirs).unwrap());
    }
}
