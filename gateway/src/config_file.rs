//! `--config FILE` (or `TOLLGATE_CONFIG`): the settings of `tollgate dev` and `tollgate serve`
//! from a TOML file, as a deployment keeps them (`deploy/tollgate.example.toml`).
//!
//! Each key is a flag's long name (`kafka-listen`, or `kafka_listen`), each value what the flag
//! takes: a string, an integer, a boolean for a switch, an array for a flag that takes a list.
//! A flag on the command line, then its environment variable, override the file: a setting is
//! taken from the file only when neither gives it, and is then passed as that flag would be. Every key and value is checked before anything starts, with the
//! flag's own parser: an unknown key (a typo would otherwise be silently ignored), a section, or
//! a value the flag refuses stops the start with a message naming the file, the key and what
//! to change.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};

/// The flag that names the file, and its environment variable.
pub const FLAG: &str = "config";
pub const ENV: &str = "TOLLGATE_CONFIG";

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {why}")]
pub struct ConfigError {
    file: PathBuf,
    why: String,
}

/// The configuration file `args` name for their subcommand (`--config FILE`,
/// `--config=FILE`, else `TOLLGATE_CONFIG`), if any.
pub fn named(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(a) = iter.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(ENV).map(PathBuf::from)
}

/// `args` (a command line whose subcommand is `subcommand`) with the settings of the TOML file
/// at `path` that neither the command line nor the environment gives, as flags right after
/// the subcommand.
pub fn apply(
    cmd: &Command,
    subcommand: &str,
    path: &Path,
    args: Vec<OsString>,
) -> Result<Vec<OsString>, ConfigError> {
    let fail = |why: String| ConfigError {
        file: path.to_owned(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(format!("not TOML: {}", e.message())))?;
    let Some(sub) = cmd.find_subcommand(subcommand) else {
        return Err(fail(format!(
            "`tollgate {subcommand}` takes no configuration file"
        )));
    };
    let mut settings: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        if value.is_table() {
            return Err(fail(format!(
                "[{key}]: sections are not settings: every setting is a top-level key"
            )));
        }
        let long = key.replace('_', "-");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && !a.is_hide_set())
            .filter(|_| long != FLAG)
            .ok_or_else(|| {
                fail(format!(
                    "unknown setting `{key}`; settings are the flags of `tollgate {subcommand} \
                     --help`, without their dashes"
                ))
            })?;
        let text = value_text(arg, value).map_err(|why| fail(format!("{key}: {why}")))?;
        // Checked now, with the flag's own parser, so the message names the file and key.
        let parts: Vec<&str> = match arg.get_value_delimiter() {
            Some(d) => text.split(d).collect(),
            None => vec![text.as_str()],
        };
        for part in parts {
            check(arg, &long, part).map_err(|why| fail(format!("{key} = {value}: {why}")))?;
        }
        let on_command_line = args.iter().any(|a| {
            let a = a.to_string_lossy();
            a.strip_prefix("--")
                .is_some_and(|rest| rest == long || rest.starts_with(&format!("{long}=")))
        });
        let in_environment = arg.get_env().is_some_and(|v| std::env::var_os(v).is_some());
        if on_command_line || in_environment {
            continue;
        }
        match arg.get_action() {
            ArgAction::SetTrue if text == "true" => settings.push(format!("--{long}").into()),
            ArgAction::SetTrue | ArgAction::SetFalse => {}
            _ => settings.push(format!("--{long}={text}").into()),
        }
    }
    // Right after the subcommand, so the command line's own flags come after them.
    let at = args
        .iter()
        .position(|a| a == subcommand)
        .map_or(args.len(), |i| i + 1);
    let mut out = args;
    out.splice(at..at, settings);
    Ok(out)
}

/// A TOML value as the text the flag would be given on the command line.
fn value_text(arg: &Arg, value: &toml::Value) -> Result<String, String> {
    let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    match value {
        toml::Value::Boolean(b) if switch => Ok(b.to_string()),
        _ if switch => Err(format!("is a switch: true or false, not {value}")),
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => {
            let Some(d) = arg.get_value_delimiter() else {
                return Err("takes one value, not a list".into());
            };
            let items = items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    other => Err(format!("a list of strings, not one holding {other}")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(items.join(&d.to_string()))
        }
        toml::Value::Table(_) => Err("a section is not a setting's value".into()),
        toml::Value::Datetime(_) => Err("a date is not a setting's value".into()),
    }
}

/// Parses `value` with `arg`'s own value parser alone (none of its relations to other flags,
/// which hold once the whole command line is known).
fn check(arg: &Arg, long: &str, value: &str) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return Ok(());
    }
    let alone = Arg::new("value")
        .long("value")
        .value_parser(arg.get_value_parser().clone());
    Command::new("tollgate")
        .no_binary_name(true)
        .arg(alone)
        // `--value=x`, so that a value starting with a dash is not taken for a flag.
        .try_get_matches_from([format!("--value={value}")])
        .map(|_| ())
        .map_err(|e| {
            // clap says "invalid value 'x' for '--value <value>': why"; the why is what counts.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            match line.split_once("': ") {
                Some((_, why)) => format!("invalid value for --{long} ({why})"),
                None => line.trim_start_matches("error: ").to_owned(),
            }
        })
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches, Parser, Subcommand};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Subcommand, Debug)]
    enum Sub {
        Serve(ServeArgs),
    }

    #[derive(Args, Debug)]
    struct ServeArgs {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:9092")]
        kafka_listen: std::net::SocketAddr,
        #[arg(long, value_delimiter = ',')]
        advertise: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        flush_interval_ms: u64,
        #[arg(long)]
        no_metering: bool,
        #[arg(long, hide = true)]
        secret_switch: bool,
        #[arg(long, value_delimiter = ',', required = true)]
        pool: Vec<String>,
    }

    fn parse(file: &str, argv: &[&str]) -> Result<ServeArgs, String> {
        let dir = std::env::temp_dir().join(format!("tollgate-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tollgate.toml");
        std::fs::write(&path, file).unwrap();
        let cmd = <Cli as clap::CommandFactory>::command();
        let args = argv.iter().map(OsString::from).collect();
        let args = apply(&cmd, "serve", &path, args).map_err(|e| e.to_string());
        let _ = std::fs::remove_dir_all(dir);
        let matches = cmd.try_get_matches_from(args?).map_err(|e| e.to_string())?;
        let Sub::Serve(a) = Cli::from_arg_matches(&matches).unwrap().command;
        Ok(a)
    }

    #[test]
    fn the_file_gives_what_the_command_line_does_not() {
        let file = r#"
            # comments are fine
            kafka-listen = "0.0.0.0:19092"
            advertise = ["a:9092", "b:9092"]
            flush_interval_ms = 250
            no-metering = true
            pool = "p:9092"
        "#;
        let a = parse(file, &["tollgate", "serve"]).unwrap();
        assert_eq!(a.kafka_listen, "0.0.0.0:19092".parse().unwrap());
        assert_eq!(a.advertise, ["a:9092", "b:9092"]);
        assert_eq!(a.flush_interval_ms, 250);
        assert!(a.no_metering);
        assert_eq!(
            a.pool,
            ["p:9092"],
            "a required flag is satisfied by the file"
        );
        let a = parse(file, &["tollgate", "serve", "--flush-interval-ms", "5"]).unwrap();
        assert_eq!(a.flush_interval_ms, 5, "the command line wins");
        assert_eq!(a.kafka_listen, "0.0.0.0:19092".parse().unwrap());
        // A list on the command line replaces the file's, not adds to it.
        let a = parse(file, &["tollgate", "serve", "--advertise=c:9092"]).unwrap();
        assert_eq!(a.advertise, ["c:9092"]);
        assert!(
            parse("", &["tollgate", "serve"]).is_err(),
            "required without the file"
        );
    }

    #[test]
    fn bad_files_say_what_to_change() {
        for (file, wanted) in [
            (
                "kafka-listen = \"nowhere\"",
                "kafka-listen = \"nowhere\": invalid value",
            ),
            (
                "flush-interval-ms = -5",
                "flush-interval-ms = -5: invalid value",
            ),
            (
                "kafka-lisen = \"0.0.0.0:1\"",
                "unknown setting `kafka-lisen`",
            ),
            ("secret-switch = true", "unknown setting `secret-switch`"),
            ("config = \"other.toml\"", "unknown setting `config`"),
            ("no-metering = \"yes\"", "no-metering: is a switch"),
            (
                "kafka-listen = [\"a\", \"b\"]",
                "kafka-listen: takes one value",
            ),
            (
                "[serve]\nkafka-listen = \"0.0.0.0:1\"",
                "[serve]: sections are not settings",
            ),
            ("kafka-listen = ", "not TOML"),
        ] {
            let err = parse(file, &["tollgate", "serve"]).unwrap_err();
            assert!(
                err.starts_with("config ") && err.contains(wanted),
                "{file:?}: {err}"
            );
        }
    }

    #[test]
    fn the_file_is_found_on_the_command_line() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            named(&args(&["tollgate", "serve", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            named(&args(&[
                "tollgate",
                "serve",
                "--config=b.toml",
                "--lanes",
                "2"
            ])),
            Some(PathBuf::from("b.toml"))
        );
        assert_eq!(
            named(&args(&["tollgate", "serve", "--", "--config", "c.toml"])),
            std::env::var_os(ENV).map(PathBuf::from)
        );
    }
}
