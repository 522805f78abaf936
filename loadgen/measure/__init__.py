"""Measurement without processes: HDR histograms and accounting (``stats``), least-squares fits
(``trend``), the leak verdict (``leak``) and the Universal Scalability Law (``usl``)."""
