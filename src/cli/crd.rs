//! `crd`: print the M2MToken CustomResourceDefinition as YAML.

use super::CommandError;

/// Prints the CRD.
pub fn run() -> Result<(), CommandError> {
    let yaml = crate::crd::crd_yaml()
        .map_err(|e| CommandError::Failed(format!("cannot render the CRD: {e}")))?;
    print!("{yaml}");
    Ok(())
}
