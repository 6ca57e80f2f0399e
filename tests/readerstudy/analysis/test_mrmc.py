"""The MRMC analysis against published reference outputs, to their printed precision.

Sources (all analyses of the Van Dyke data, ``data/vandyke.csv``):

- [MRMCaov README]: ``summary(mrmc(empirical_auc(truth, rating), treatment, reader, case,
  data = VanDyke))`` printed in the README of brian-j-smith/MRMCaov (version 0.1.8), jackknife,
  random readers and cases.
- [MRMCaov JSS]: the printed outputs of Smith & Hillis, "MRMCaov: Multi-Reader Multi-Case ANOVA
  Software for R" (brian-j-smith/MRMCaov, docs/jss/MRMCaov.tex): DeLong covariance, fixed
  readers, fixed cases, cases nested within readers (``case2``), binary sensitivity
  (``rating >= 3``).
- [OR-DBM 2.51]: lines of the OR-DBM MRMC 2.51 (Build 20181028) VanDyke output quoted in RJafroc's
  source (R/StORHAnalysis.R, "inst/Iowa/VanDyke.txt, lines 228-243").
- [RJafroc]: RJafroc's DBMH output and sample-size tests for dataset02 (= Van Dyke):
  tests/testthat/test-SsSampleSize.R and the RJafroc ROC book's sample-size chapter.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from readerstudy.analysis.mrmc import DesignRefused, Rating, RatingsInvalid, analyse, parse_ratings
from readerstudy.analysis.mrmc import formats, power
from readerstudy.analysis.mrmc.fom import placements
from readerstudy.analysis.mrmc.simulation import RoeMetz

DATA = Path(__file__).parent / "data" / "vandyke.csv"


def printed(value: float, text: str) -> bool:
    """Whether ``value`` shows as ``text`` at ``text``'s printed precision (its number of decimals)."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(value - float(text)) <= 0.5 * 10 ** -decimals + 1e-15


def check(value, text):
    assert printed(value, text), f"{value!r} does not print as {text}"


def check_all(values: dict, expected: dict[str, str]) -> None:
    """:func:`check` each named value against the text the reference printed for it."""
    for key, text in expected.items():
        check(values[key], text)


@pytest.fixture(scope="module")
def vandyke() -> list[Rating]:
    return parse_ratings(DATA.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def jackknife(vandyke):
    return analyse(vandyke)


def test_vandyke_is_the_published_dataset(vandyke):
    assert len(vandyke) == 1140
    assert len({r.case for r in vandyke if r.truth}) == 45 and len({r.case for r in vandyke}) == 114


def test_reader_figures_of_merit_match_rjafroc_and_mrmcaov(jackknife):
    # [RJafroc] StSignificanceTesting(dataset02, FOM = "Wilcoxon")$FOMs
    expected = {"1": ("0.91964573", "0.94782609"), "2": ("0.85877617", "0.90531401"),
                "3": ("0.90386473", "0.92173913"), "4": ("0.97310789", "0.99935588"),
                "5": ("0.82979066", "0.92995169")}
    for reader, (first, second) in expected.items():
        check(jackknife["readers"][reader]["1"], first)
        check(jackknife["readers"][reader]["2"], second)
    check(jackknife["treatments"]["1"]["fom"], "0.89703704")
    check(jackknife["treatments"]["2"]["fom"], "0.94083736")


def test_random_readers_random_cases_jackknife_matches_mrmcaov(jackknife):
    # [MRMCaov README]
    check_all(jackknife["variance_components"],
              {"var_r": "0.0015349993", "var_tr": "0.0002004025", "var_error": "0.0008022883",
               "cov1": "0.0003466137", "cov2": "0.0003440748", "cov3": "0.0002390284"})
    check_all(jackknife["variance_components"]["correlations"],
              {"r1": "0.4320314", "r2": "0.4288668", "r3": "0.2979333"})
    check(jackknife["mean_squares"]["ms_t"], "0.004796171")
    check(jackknife["mean_squares"]["ms_tr"], "0.0005510306")
    rrrc = jackknife["random_readers_random_cases"]
    check(rrrc["denominator"], "0.001076263")
    check_all(rrrc, {"F": "4.456319", "ddf": "15.25967", "p": "0.05166569"})
    assert rrrc["ndf"] == 1
    (d,) = rrrc["differences"]
    assert (d["a"], d["b"]) == ("1", "2")
    check(d["difference"], "-0.04380032")
    check(d["se"], "0.02074862")
    check(d["df"], "15.25967")
    check(d["ci95"][0], "-0.0879594986")
    check(d["ci95"][1], "0.0003588544")
    check(d["statistic"], "-2.110999")
    check(d["p"], "0.05166569")
    single = rrrc["treatments"]
    for name, (ms_r, cov2, se, df, low, high) in {
            "1": ("0.003082629", "0.0004839618", "0.03317360", "12.74465", "0.8252236", "0.9688505"),
            "2": ("0.001304602", "0.0002041879", "0.02156637", "12.71019", "0.8941378", "0.9875369")}.items():
        check(single[name]["ms_r"], ms_r)
        check(single[name]["cov2"], cov2)
        check(single[name]["se"], se)
        check(single[name]["df"], df)
        check(single[name]["ci95"][0], low)
        check(single[name]["ci95"][1], high)
    assert jackknife["treatments"]["1"]["se"] == single["1"]["se"]


def test_fixed_readers_random_cases_matches_mrmcaov_and_or_dbm(jackknife):
    # [MRMCaov JSS] "Fixed readers"; single-treatment figures also in [OR-DBM 2.51] lines 228-243
    frrc = jackknife["fixed_readers_random_cases"]
    check(frrc["denominator"], "0.0008758604")
    check(frrc["chi2"], "5.475953")
    check(frrc["p"], "0.01927984")
    (d,) = frrc["differences"]
    check(d["se"], "0.01871748")
    check(d["ci95"][0], "-0.08048591")
    check(d["ci95"][1], "-0.00711473")
    check(d["statistic"], "-2.340075")
    for name, (var, cov2, se, low, high) in {
            "1": ("0.0010141028", "0.0004839618", "0.02428971", "0.84943008", "0.94464399"),
            "2": ("0.0005904738", "0.0002041879", "0.01677632", "0.90795637", "0.97371835")}.items():
        single = frrc["treatments"][name]
        check(single["var_error"], var)
        check(single["cov2"], cov2)
        check(single["se"], se)
        check(single["ci95"][0], low)
        check(single["ci95"][1], high)
    per_reader = {d["reader"]: d for d in frrc["per_reader"]}
    for reader, (estimate, se, low, high, z, p) in {
            "1": ("-0.02818035", "0.02551213", "-0.078183215", "0.021822507", "-1.1045864", "0.26933885"),
            "2": ("-0.04653784", "0.02630183", "-0.098088476", "0.005012792", "-1.7693768", "0.07683102"),
            "3": ("-0.01787440", "0.03120965", "-0.079044180", "0.043295388", "-0.5727202", "0.56683414"),
            "4": ("-0.02624799", "0.01729129", "-0.060138290", "0.007642316", "-1.5179891", "0.12901715"),
            "5": ("-0.10016103", "0.04405746", "-0.186512066", "-0.013809995", "-2.2734182", "0.02300099")}.items():
        d = per_reader[reader]
        for value, text in zip((d["difference"], d["se"], d["ci95"][0], d["ci95"][1], d["statistic"], d["p"]),
                               (estimate, se, low, high, z, p)):
            check(value, text)
    single = {(s["reader"], s["treatment"]): s for s in frrc["single_reader"]}
    check(single["4", "2"]["se"], "0.0007213348")
    check(single["4", "1"]["ci95"][1], "1.0000000")  # cut at 1, as MRMCaov prints it
    check(single["5", "1"]["ci95"][0], "0.7480206")


def test_random_readers_fixed_cases_matches_mrmcaov(jackknife):
    # [MRMCaov JSS] "Fixed cases"
    rrfc = jackknife["random_readers_fixed_cases"]
    check(rrfc["F"], "8.704")
    assert (rrfc["ndf"], rrfc["ddf"]) == (1, 4)
    check(rrfc["p"], "0.04195875")
    (d,) = rrfc["differences"]
    check(d["se"], "0.01484629")
    check(d["ci95"][0], "-0.08502022")
    check(d["ci95"][1], "-0.00258042")
    check(rrfc["treatments"]["1"]["se"], "0.02482994")
    check(rrfc["treatments"]["2"]["ci95"][0], "0.8959894")


def test_delong_covariance_matches_mrmcaov(vandyke):
    # [MRMCaov JSS] "DeLong method"
    result = analyse(vandyke, covariance="delong")
    check_all(result["variance_components"],
              {"var_r": "0.0015364254", "var_tr": "0.0002045840", "var_error": "0.0007921325",
               "cov1": "0.0003420090", "cov2": "0.0003395265", "cov3": "0.0002358497"})
    rrrc = result["random_readers_random_cases"]
    check_all(rrrc, {"F": "4.484854", "ddf": "15.06611", "p": "0.05123303"})
    check(rrrc["differences"][0]["se"], "0.0206825")
    check(rrrc["differences"][0]["ci95"][1], "0.0002665519")
    check(rrrc["treatments"]["1"]["se"], "0.03307642")
    check(rrrc["treatments"]["2"]["df"], "12.56530")


def test_cases_nested_within_readers_match_mrmcaov(vandyke):
    # [MRMCaov JSS] "Cases nested within readers": case2 = reader.case
    nested = [dataclasses.replace(r, case=f"{r.reader}.{r.case}") for r in vandyke]
    result = analyse(nested)
    assert result["design"] == "nested_within_readers"
    vc = result["variance_components"]
    for key, text in [("var_r", "1.293517e-03"), ("var_tr", "9.213005e-05"), ("var_error", "8.079682e-04"),
                      ("cov1", "3.490676e-04")]:
        assert float(f"{vc[key]:.6e}") == float(text)
    assert vc["cov2"] == vc["cov3"] == 0.0
    rrrc = result["random_readers_random_cases"]
    check(rrrc["F"], "8.704")
    assert rrrc["ddf"] == 4
    check(rrrc["p"], "0.04195875")
    assert result["dbm"] == {"note": "the DBM pseudovalue ANOVA is given for factorial designs; see the OR analysis"}


def test_binary_sensitivity_matches_mrmcaov(vandyke):
    # [MRMCaov JSS] binary_sens(truth, rating >= 3): on the 45 positive cases only
    result = analyse(vandyke, fom="sensitivity", threshold=3)
    assert result["n_cases"] == 45
    check_all(result["variance_components"],
              {"var_r": "0.0049747475", "var_tr": "0.0007828283", "var_error": "0.0023681257",
               "cov1": "0.0009943883", "cov2": "0.0010145903", "cov3": "0.0006604938"})
    rrrc = result["random_readers_random_cases"]
    check_all(rrrc, {"F": "6.689493", "ddf": "15.71732", "p": "0.02008822"})
    check(rrrc["differences"][0]["ci95"][0], "-0.1780371")
    check(rrrc["treatments"]["2"]["ci95"][1], "1.0000000")
    check(result["readers"]["2"]["1"], "0.778")


def test_the_dbm_view_gives_the_or_test_with_the_jackknife(jackknife):
    # [RJafroc] DBMH on dataset02: F 4.456319, ddf 15.25967, p 0.05166569 (equal to OR: Hillis et al. 2005)
    dbm = jackknife["dbm"]["random_readers_random_cases"]
    check_all(dbm, {"F": "4.456319", "ddf": "15.25967", "p": "0.05166569"})
    assert dbm["F"] == pytest.approx(jackknife["random_readers_random_cases"]["F"], rel=1e-10)
    # the DBM reader variance equals the OR one (jackknife pseudovalues: Hillis 2005)
    assert jackknife["dbm"]["variance_components"]["var_r"] == pytest.approx(
        jackknife["variance_components"]["var_r"], rel=1e-9)
    assert jackknife["dbm"]["random_readers_fixed_cases"]["F"] == pytest.approx(8.704, abs=5e-4)


def test_sample_size_matches_rjafroc(jackknife):
    # [RJafroc] SsPowerGivenJK(dataset02, J = 6, K = 111) = 0.5526116; SsSampleSizeKGivenJ J = 6 -> 251,
    # J = 10 -> 163 (power 0.8015625), J = 10 at 90 % -> 236; effect = the observed difference
    vc = jackknife["variance_components"]
    effect = abs(jackknife["random_readers_random_cases"]["differences"][0]["difference"])
    assert power.power(vc, pilot_cases=114, readers=6, cases=111, effect=effect) == pytest.approx(0.5526116, abs=5e-8)
    assert power.cases_needed(vc, pilot_cases=114, readers=6, effect=effect)[0] == 251
    cases, achieved = power.cases_needed(vc, pilot_cases=114, readers=10, effect=effect)
    assert cases == 163 and achieved == pytest.approx(0.8015625, abs=5e-8)
    assert power.cases_needed(vc, pilot_cases=114, readers=10, effect=effect, target=0.9)[0] == 236
    # too few readers for any number of cases: the reader variance dominates
    cases, achieved = power.cases_needed(vc, pilot_cases=114, readers=2, effect=0.01)
    assert cases is None and achieved < 0.8


def test_the_json_has_the_documented_keys_and_no_nan(jackknife):
    assert {"figure_of_merit", "covariance", "design", "treatments", "readers", "random_readers_random_cases",
            "fixed_readers_random_cases", "random_readers_fixed_cases", "variance_components"} <= set(jackknife)
    assert set(jackknife["treatments"]["1"]) == {"fom", "se", "ci95", "df"}
    assert {"F", "ndf", "ddf", "p", "differences"} <= set(jackknife["random_readers_random_cases"])
    assert {"chi2", "df", "p", "differences"} <= set(jackknife["fixed_readers_random_cases"])
    assert {"F", "ndf", "ddf", "p", "differences"} <= set(jackknife["random_readers_fixed_cases"])
    assert set(jackknife["random_readers_random_cases"]["differences"][0]) >= {"a", "b", "difference", "se", "df",
                                                                                 "p", "ci95"}
    assert set(jackknife["variance_components"]) >= {"var_r", "var_tr", "cov1", "cov2", "cov3", "var_error"}
    assert "Hillis" in jackknife["method"] and any("Obuchowski" in ref for ref in jackknife["references"])
    assert json.loads(json.dumps(jackknife, allow_nan=False)) == jackknife


def test_differences_follow_the_natural_order_of_the_treatment_names():
    ratings = [Rating(str(j), treatment, str(k), k % 2, float((k + j + len(treatment)) % 5))
               for treatment in ("10", "2", "1") for j in range(3) for k in range(8)]
    pairs = [(d["a"], d["b"]) for d in analyse(ratings)["random_readers_random_cases"]["differences"]]
    assert pairs == [("1", "2"), ("1", "10"), ("2", "10")]


def test_empirical_auc_by_hand():
    # positives 3, 2; negatives 1, 2: 3>1, 3>2, 2>1, 2=2 (one half) -> 3.5 / 4
    assert placements(np.array([3.0, 2.0]), np.array([1.0, 2.0])).mean() == 0.875


def test_accuracy_by_hand_one_reader():
    # one reader, cases a..d correct 1,1,0,1 under T1 and 1,0,0,0 under T2
    ratings = [Rating("r", "T1", c, 1, v) for c, v in zip("abcd", (1, 1, 0, 1))]
    ratings += [Rating("r", "T2", c, 1, v) for c, v in zip("abcd", (1, 0, 0, 0))]
    result = analyse(ratings, fom="accuracy")
    assert (result["treatments"]["T1"]["fom"], result["treatments"]["T2"]["fom"]) == (0.75, 0.25)
    # jackknife variance of a proportion over K cases: p(1-p)/(K-1) = 0.1875 / 3
    assert result["variance_components"]["var_error"] == pytest.approx(0.0625)
    # paired: differences 0, 1, 0, 1 -> var of the mean difference = s^2/K = (1/3)/4
    (d,) = result["fixed_readers_random_cases"]["per_reader"]
    assert d["difference"] == 0.5 and d["se"] == pytest.approx(math.sqrt(1 / 12))
    assert result["random_readers_random_cases"]["F"] is None
    assert "two readers" in result["random_readers_random_cases"]["note"]


@pytest.mark.parametrize(("change", "message"), [
    ("drop_one", "reader '2' rated 1 case(s) under another treatment but not under '2'"),
    ("overlap", "readers '1' and '2' share"),
    ("one_treatment", "at least two treatments"),
    ("nested_in_treatments", "rated 114 case(s) under another treatment but not under '1'"),
])
def test_designs_it_cannot_analyse_are_refused_with_the_reason(vandyke, change, message):
    if change == "drop_one":
        ratings = [r for r in vandyke if not (r.reader == "2" and r.treatment == "2" and r.case == "7")]
    elif change == "overlap":  # readers 1 and 2 share half their cases, the rest are their own
        ratings = [dataclasses.replace(r, case=f"{r.reader}.{r.case}") if int(r.case) > 57 else r
                   for r in vandyke if r.reader in ("1", "2")]
    elif change == "one_treatment":
        ratings = [r for r in vandyke if r.treatment == "1"]
    else:  # cases nested within treatments (MRMCaov's case3)
        ratings = [dataclasses.replace(r, case=f"{r.treatment}.{r.case}") for r in vandyke]
    with pytest.raises(DesignRefused, match=re.escape(message)) as refused:
        analyse(ratings)
    if change in ("drop_one", "overlap", "nested_in_treatments"):
        assert "The analysis takes these designs: factorial" in str(refused.value)


def test_figures_of_merit_that_cannot_be_estimated_are_refused(vandyke):
    only_negatives = [r for r in vandyke if r.truth == 0 or r.reader != "3"]
    nested = [dataclasses.replace(r, case=f"{r.reader}.{r.case}") for r in only_negatives]
    with pytest.raises(DesignRefused, match="reader '3' rated 0 positive and 69 negative"):
        analyse(nested)
    with pytest.raises(DesignRefused, match="for accuracy every rating is 1"):
        analyse(vandyke, fom="accuracy")
    with pytest.raises(DesignRefused, match="DeLong covariance is defined for the AUC of a factorial"):
        analyse([dataclasses.replace(r, case=f"{r.reader}.{r.case}") for r in vandyke], covariance="delong")
    with pytest.raises(DesignRefused, match="unknown figure of merit"):
        analyse(vandyke, fom="kappa")


def test_contradictory_ratings_are_refused(vandyke):
    twice = vandyke + [vandyke[0]]
    with pytest.raises(RatingsInvalid, match="rated case '1' under treatment '1' more than once"):
        analyse(twice)
    with pytest.raises(RatingsInvalid, match="case '1' has truth 1 here but 0"):
        analyse(vandyke + [dataclasses.replace(vandyke[0], reader="6", truth=1)])


def test_parse_ratings_lists_every_bad_line():
    text = ("Reader,Treatment,Case,Truth,Rating\n"
            "1,A,c1,0,2\n"
            "1,A,c2,2,3\n"       # bad truth
            ",A,c3,1,x\n"        # empty reader, bad rating
            "1,A,c1,0,2\n"       # duplicate of line 2
            "1,A,c4,1\n"         # too few fields
            "1,A,c5,1,inf\n")    # not finite
    with pytest.raises(RatingsInvalid) as refused:
        parse_ratings(text)
    lines = str(refused.value).splitlines()
    assert "line 3: truth '2' is not 0 or 1" in lines
    assert "line 4: reader is empty" in lines and "line 4: rating 'x' is not a finite number" in lines
    assert "line 2: reader '1' rated case 'c1' under treatment 'A' more than once (also line 5)" in lines
    assert "line 5: reader '1' rated case 'c1' under treatment 'A' more than once (also line 2)" in lines
    assert "line 6: has 4 fields but the header has 5" in lines
    assert "line 7: rating 'inf' is not a finite number" in lines
    with pytest.raises(RatingsInvalid, match="unknown column"):
        parse_ratings("reader,treatment,case,truth,rating,case2\n1,A,c,1,2,x\n")
    with pytest.raises(RatingsInvalid, match="missing column.s.: truth"):
        parse_ratings("reader,treatment,case,rating\n1,A,c,2\n")


def test_the_tool_formats_read_back_to_the_same_analysis(vandyke, jackknife):
    back = formats.read_long_csv(formats.long_csv(vandyke))
    assert back == vandyke
    text = formats.imrmc(vandyke, "Van Dyke")
    assert "NR: 5\nN0: 69\nN1: 45\nNM: 2\n\nBEGIN DATA:\n-1,1,0,0\n" in text
    again = analyse(formats.read_imrmc(text))
    assert again["random_readers_random_cases"]["F"] == pytest.approx(jackknife["random_readers_random_cases"]["F"])
    with pytest.raises(RatingsInvalid, match="NR is 6 but the data have 5"):
        formats.read_imrmc(text.replace("NR: 5", "NR: 6"))
    with pytest.raises(RatingsInvalid, match="has no truth row"):
        formats.read_imrmc(text.replace("-1,3,0,0\n", ""))


@pytest.mark.slow
def test_under_the_null_hypothesis_the_test_rejects_at_about_five_percent():
    """Roe-Metz simulation: 1000 null studies (5 readers, 50 + 50 cases), the random-readers test's
    rejection rate at alpha 0.05 and the coverage of the true difference under an alternative.
    The OR test with Hillis's ddf is known to be close to nominal or slightly conservative
    (Hillis 2007); bench/mrmc_null.py runs more studies and prints the figures."""
    from scipy import stats

    model, rng = RoeMetz(), np.random.default_rng(20261201)
    n = 1000
    rejected = sum(analyse(model.study(rng, mu=(1.5, 1.5), readers=5, negatives=50, positives=50))
                   ["random_readers_random_cases"]["p"] < 0.05 for _ in range(n))
    interval = stats.binomtest(rejected, n).proportion_ci(0.95)
    assert 0.02 <= rejected / n <= 0.07, (rejected, interval)
    assert interval.low < 0.05 + 0.02 and interval.high > 0.05 - 0.02
    truth = model.true_auc(1.5) - model.true_auc(1.9)
    covered = 0
    for _ in range(300):
        d = analyse(model.study(rng, mu=(1.5, 1.9), readers=5, negatives=50, positives=50))[
            "random_readers_random_cases"]["differences"][0]
        covered += d["ci95"][0] <= truth <= d["ci95"][1]
    assert 0.9 <= covered / 300 <= 0.99
