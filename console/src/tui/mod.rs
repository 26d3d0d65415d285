//! tmp
pub struct Options { pub agent: Option<String>, pub readonly: bool, pub theme: Option<String>, pub mouse: bool }
pub async fn run(_o: Options) -> Result<(), crate::cli::Failure> { Ok(()) }
