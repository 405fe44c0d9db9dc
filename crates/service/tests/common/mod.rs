pub mod app;
pub mod chaos;
pub mod google;
pub mod mocks;
