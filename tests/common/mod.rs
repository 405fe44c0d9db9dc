pub mod app;
pub mod google;
