//! `emtrack broker …` and `emtrack device …`: identities on the broker,
//! issued, rotated and revoked through Mosquitto's dynamic security plugin
//! (crate `identities`) as the configured admin identity. Issued passwords
//! go to a file only its owner can read, never to the terminal or the log.

use crate::config::Config;
use identities::Admin;
use link::Secret;
use protocol::DeviceId;
use std::io::Write;
use std::path::Path;

/// What `emtrack device` does to each device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceOp {
    /// Issue a credential.
    Enrol,
    /// Replace its password; the old one stops working.
    Rotate,
    /// Revoke it.
    Retire,
}

/// Connects as the configured dynsec admin identity.
pub async fn admin(config: &Config) -> Result<Admin, String> {
    let link = config.admin_link().map_err(|e| e.to_string())?.ok_or(
        "set broker_admin_username and broker_admin_password_file (the identity made by \
         `mosquitto_ctrl dynsec init`)",
    )?;
    // Not the running service's admin client id, which this would take over.
    let client_id = format!("{}-admin-cli-{}", config.mqtt_client_id, std::process::id());
    Admin::connect(&link, &client_id)
        .await
        .map_err(|e| e.to_string())
}

/// Creates or updates emtrack's service identity (`mqtt_username`, with
/// the password in `mqtt_password_file`).
pub async fn setup(config: &Config) -> Result<String, String> {
    let link = config.mqtt_link().map_err(|e| e.to_string())?;
    let (Some(user), Some(password)) = (&link.username, &link.password) else {
        return Err(
            "set mqtt_username and mqtt_password_file: the service identity to create".into(),
        );
    };
    admin(config)
        .await?
        .setup_service(user, password)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "service identity {user} ready: it may read device topics and publish officers' alerts"
    ))
}

/// Enrols, rotates or retires `ids`; issued passwords are written to `out`
/// as `<username> <password>` lines (a new file, mode 0600, created before
/// the broker changes anything, each line written as its credential is
/// issued: a password the broker holds is never lost).
pub async fn devices(
    config: &Config,
    op: DeviceOp,
    ids: &[String],
    out: Option<&Path>,
) -> Result<String, String> {
    let devices = ids
        .iter()
        .map(|s| DeviceId::parse_any(s).map_err(|e| format!("device id {s:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut file = match (op, out) {
        (DeviceOp::Retire, _) => None,
        (_, Some(path)) => Some(CredentialsFile::create(path)?),
        (_, None) => {
            return Err(
                "--out FILE is needed: the new passwords are written there, never shown".into(),
            );
        }
    };
    let admin = admin(config).await?;
    let (mut done, mut revoked) = (0, 0);
    for d in &devices {
        let issued = match op {
            DeviceOp::Enrol => admin.enrol_device(d).await.map(Some),
            DeviceOp::Rotate => admin.rotate_device(d).await.map(Some),
            DeviceOp::Retire => admin.retire_device(d).await.map(|gone| {
                revoked += usize::from(gone);
                None
            }),
        }
        .map_err(|e| format!("{d}: {e} ({done} done before it)"))?;
        if let (Some(password), Some(f)) = (issued, file.as_mut()) {
            f.append(&identities::acl::device_username(d), &password)?;
        }
        done += 1;
    }
    Ok(match (op, out) {
        (DeviceOp::Retire, _) => format!(
            "{revoked} of {} device credential(s) revoked",
            devices.len()
        ),
        (_, Some(path)) => format!("{done} credential(s) written to {}", path.display()),
        (_, None) => String::new(),
    })
}

/// Issues an officer's identity (reads only its own alert topic).
pub async fn officer(config: &Config, officer_id: i64, out: &Path) -> Result<String, String> {
    let mut file = CredentialsFile::create(out)?;
    let password = admin(config)
        .await?
        .enrol_officer(officer_id)
        .await
        .map_err(|e| e.to_string())?;
    let user = identities::acl::officer_username(officer_id);
    file.append(&user, &password)?;
    Ok(format!(
        "officer identity {user} written to {}",
        out.display()
    ))
}

/// A new file of `<username> <password>` lines, readable by its owner only
/// (the format `device-sim --credentials` reads).
struct CredentialsFile {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl CredentialsFile {
    fn create(path: &Path) -> Result<CredentialsFile, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                format!(
                    "cannot create {}: {e} (it must not exist yet)",
                    path.display()
                )
            })?;
        Ok(CredentialsFile {
            file,
            path: path.to_owned(),
        })
    }

    fn append(&mut self, user: &str, password: &Secret) -> Result<(), String> {
        writeln!(self.file, "{user} {}", password.expose())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| {
                format!(
                    "cannot write {}: {e}; {user}'s new credential is live on the broker: rotate it",
                    self.path.display()
                )
            })
    }
}
