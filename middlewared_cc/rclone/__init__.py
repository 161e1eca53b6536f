"""The rclone engine: a supervised ``rclone rcd``, credential verification and listings."""

from middlewared_cc.rclone.errors import RcloneError, RcloneUnavailable
from middlewared_cc.rclone.rcd import RcloneDaemon

__all__ = ["RcloneDaemon", "RcloneError", "RcloneUnavailable"]
