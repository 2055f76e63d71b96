//! The smallest host: an admin server with one token, up for a moment.
fn main() -> Result<(), prodbg::Error> {
    let secret = prodbg::generate_secret()?;
    let admin = prodbg::Admin::builder()
        .bind("127.0.0.1:0")
        .token("ops", prodbg::Scope::Admin, &secret)
        .spawn()?;
    println!("{}", admin.url());
    Ok(())
}
