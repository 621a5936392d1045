"""Dynamic networks: token reduction (ToMe, ...) that a backbone calls, configured as `reduction=`."""

from jaxvit.dynamic import evit, tome
