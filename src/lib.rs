//! messenger-handover: hands a Dialogflow Messenger bot's conversation to the Facebook Page
//! Inbox and reliably takes it back, with the bot's Dialogflow contexts synced on return.

pub mod dialogflow;
pub mod messenger;
pub mod secret;
pub mod time;
