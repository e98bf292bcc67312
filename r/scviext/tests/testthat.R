library(testthat)
library(scviext)

test_check("scviext")
