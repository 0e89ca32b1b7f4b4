"""Call recordings: both sides of a call on one stereo timeline, streamed to Ogg/Opus as the call goes."""
