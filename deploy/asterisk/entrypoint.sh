#!/bin/bash
# Entrypoint of the stack's Asterisk container: render /etc/asterisk from the
# image's asterisk_conf/ and deploy/asterisk/local/ (see render-conf), hand it
# to the asterisk user as the sandbox does, then run the command (Asterisk in
# the foreground, dropping root itself with -U/-G).
set -euo pipefail

render-conf /usr/share/acd-router/asterisk_conf "${ACD_ASTERISK_LOCAL:-/etc/acd-router/asterisk}" /etc/asterisk
chown -R asterisk:asterisk /etc/asterisk
chmod 0750 /etc/asterisk
chmod 0640 /etc/asterisk/*.conf
install -d -o asterisk -g asterisk /run/asterisk
exec "$@"
