# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Stateless source NAT (tc_nat_filter): model, backends (tc u32 + act_nat, nftables egress), persistence."""
