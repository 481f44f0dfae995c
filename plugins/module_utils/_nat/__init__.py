# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Stateless source NAT (tc_nat_filter), one sub-package whose imports go one way:

model (rules) and kernel (act_nat detection) import nothing of the package; act_nat_codec neither;
tc_backend and nft_backend import model (and the codec); persist imports the backends; run imports them all.
"""
