//! `hub user`: add users (with a first enrolment code or this machine enrolled), list them,
//! issue new codes.

use switchboard_hub::config::Config;

use crate::{
    UserCommand,
    cli::{admin_client, default_identity_path, devices::parse_device, format_ms, messages::enrol},
};

pub(crate) async fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let admin = admin_client(config)?;
    match command {
        UserCommand::Add { name, device, identity } => {
            let added = admin.add_user(&name).await?;
            println!("added {}", added.user.name);
            match device {
                None => {
                    println!("enrolment code: {}", added.code);
                    println!("valid until:    {}", format_ms(added.code_expires_ms));
                    println!(
                        "enrol a device: hub enrol {}/DEVICE --code {}",
                        added.user.name, added.code
                    );
                }
                Some(device) => {
                    let address = parse_device(&format!("{}/{device}", added.user.name))?;
                    let path = identity.unwrap_or_else(default_identity_path);
                    enrol(config, address, &added.code, None, None, &path).await?;
                }
            }
        }
        UserCommand::List => {
            for user in admin.users().await? {
                println!("{}\t{:?}\tadded {}", user.name, user.status, format_ms(user.created_ms));
            }
        }
        UserCommand::Code { name } => {
            let code = admin.new_code(&name).await?;
            println!("enrolment code for {}: {}", code.user.name, code.code);
            println!("valid until: {}", format_ms(code.code_expires_ms));
        }
    }
    Ok(())
}
