"""The EGSDE paper's evaluation protocol: L2, PSNR, SSIM (MSE, MS-SSIM) against the source images
and FID (KID) against the target domain, with the official code's numbers.

Modules, one concept each:

- ``folders``: image files of a folder; translated images paired with their sources by stem;
- ``preprocessing``: how the official code loads an image for each metric (resize, range);
- ``metrics``: per-image L2, MSE, PSNR, SSIM, MS-SSIM (official formulas, [0, 1] range);
- ``inception``: pytorch-fid's FID Inception-v3 in plain torch and its weight file;
- ``fid``: Inception features and statistics, Fréchet distance, KID, statistics files;
- ``protocol``: ``evaluate_folders``, the whole evaluation of a translated folder, and
  ``folder_statistics``, a target folder's FID statistics to save and reuse;
- ``table``: ``format_table``, its printed form.

FID needs the ``eval`` extra (scipy, for the matrix square root); SSIM uses pytorch-msssim, a
dependency of egsde-rt. Nothing is downloaded: FID needs pytorch-fid's weight file
``pt_inception-2015-12-05-6726825d.pth``.
"""

from .fid import load_statistics, save_statistics
from .protocol import evaluate_folders, folder_statistics
from .table import format_table

__all__ = ["evaluate_folders", "folder_statistics", "format_table", "load_statistics", "save_statistics"]
