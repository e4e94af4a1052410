//! Resizing through an operator's command (`--pool-scale-command`), e.g.
//! `kubectl scale statefulset/tansu --replicas={n}` or a script that starts and stops brokers.

use std::process::Stdio;
use std::time::Duration;

/// A shell command with `{n}` where the number of brokers goes.
#[derive(Debug, Clone)]
pub struct CommandScaler {
    template: String,
    timeout: Duration,
}

/// How much of a failed command's output an error quotes.
const QUOTED: usize = 500;

impl CommandScaler {
    pub fn new(template: &str, timeout: Duration) -> Result<CommandScaler, String> {
        if !template.contains("{n}") {
            return Err(format!(
                "--pool-scale-command {template:?} has no {{n}} for the number of brokers"
            ));
        }
        Ok(CommandScaler {
            template: template.to_owned(),
            timeout,
        })
    }

    /// Runs the command for `n` brokers with `sh -c`; fails with its exit status and the end
    /// of its output when it does not succeed within the timeout.
    pub async fn scale(&self, n: u32) -> Result<(), String> {
        // `n` is a number the gateway made, so substituting it cannot inject anything.
        let command = self.template.replace("{n}", &n.to_string());
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run `{command}`: {e}"))?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| format!("`{command}` did not finish within {:?}", self.timeout))?
            .map_err(|e| format!("`{command}`: {e}"))?;
        if out.status.success() {
            tracing::info!(%command, "pool scale command succeeded");
            return Ok(());
        }
        let mut said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if said.is_empty() {
            said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        if said.len() > QUOTED {
            let mut cut = said.len() - QUOTED;
            while !said.is_char_boundary(cut) {
                cut += 1;
            }
            said = format!("...{}", &said[cut..]);
        }
        Err(format!("`{command}` failed ({}): {said}", out.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_the_command_with_the_number_of_brokers() {
        let dir = std::env::temp_dir().join(format!("tollgate-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("asked");
        let scaler = CommandScaler::new(
            &format!("echo {{n}} >> {}", file.display()),
            Duration::from_secs(10),
        )
        .unwrap();
        scaler.scale(3).await.unwrap();
        scaler.scale(1).await.unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "3\n1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_failing_command_says_how_and_what_it_printed() {
        let scaler = CommandScaler::new(
            "echo 'replicas {n} refused' >&2; exit 3",
            Duration::from_secs(10),
        )
        .unwrap();
        let e = scaler.scale(4).await.unwrap_err();
        assert!(
            e.contains("replicas 4 refused") && e.contains("exit status: 3"),
            "{e}"
        );

        let slow = CommandScaler::new("sleep 5 # {n}", Duration::from_millis(100)).unwrap();
        assert!(slow.scale(2).await.unwrap_err().contains("did not finish"));

        assert!(
            CommandScaler::new("kubectl scale sts/x", Duration::from_secs(1))
                .unwrap_err()
                .contains("{n}")
        );
    }
}
