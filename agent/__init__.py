"""wacall: an AI voice agent for WhatsApp Business Calling."""
