"""Call recording (docs/recording.md): the policy, the files, their retention."""
