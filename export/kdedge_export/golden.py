"""A finished bundle scored through kdedge_run: golden vectors for other readers, held-out test metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOLDEN_TOLERANCE = 1e-5
# long texts (docs/bundle.md "Long texts (windows)"): realistic Traditional-Chinese health messages
_P_SLEEP = ("我是一個三十二歲的女生，在科技公司當工程師，每天都要對著電腦十個小時以上。"
            "這半年來常常覺得很累，早上怎麼睡都睡不飽，到了晚上躺在床上又一直想工作的事情，要翻來覆去一兩個小時才睡得著。"
            "白天上班的時候注意力很難集中，開會時常常恍神，同事跟我說話我也會突然忘記剛剛講到哪裡。"
            "週末雖然可以補眠，但是睡到中午起來反而頭昏腦脹，整個人沒有精神。"
            "我想問這樣的情況是正常的疲勞，還是需要去看醫生？")
_P_STOMACH = ("我爸爸今年六十八歲，最近這三個月胃口變得很差，吃一點東西就覺得肚子脹，常常打嗝，"
              "有時候半夜會被上腹部的悶痛痛醒。他以前年輕的時候抽菸抽得很兇，也很喜歡喝酒，"
              "雖然五年前已經戒掉了，但是體重這陣子一直往下掉，三個月瘦了將近六公斤。"
              "家裡的人都很擔心，想帶他去醫院做胃鏡檢查，可是他很怕做胃鏡，一直說只是消化不好而已。"
              "請問這種情況一定要做胃鏡嗎？有沒有其他比較不痛苦的檢查方式？")
_P_KNEE = ("去年開始我每個禮拜跑步三次，每次大概跑五公里，剛開始都沒有什麼問題。"
           "但是從上個月開始，跑完步之後右邊膝蓋的外側會有一點刺痛，下樓梯的時候特別明顯，"
           "休息兩三天就會好一些，可是只要再去跑步又會痛起來。"
           "我有試過跑步前多做一些伸展，也換了一雙新的慢跑鞋，好像沒有改善很多。"
           "朋友說可能是髂脛束症候群，建議我去復健科看看，也有人說要去做核磁共振才知道有沒有傷到半月板。")
_P_SKIN = ("我兒子今年五歲，從小皮膚就比較敏感，一到冬天手肘和膝蓋後面就會變得很乾，"
           "還會一直抓，抓到破皮流血。晚上睡覺的時候也會癢到醒過來，哭著說好癢。"
           "我們已經換成無香料的沐浴乳，洗澡水也不敢太熱，洗完澡馬上幫他擦乳液，"
           "可是效果有限。帶去診所看過兩次，醫生說是異位性皮膚炎，要長期保養。"
           "我想知道除了擦乳液之外，飲食上有沒有需要注意的地方？")
# a patient's 411-character message that names the drug only at the end (after code point 389):
# a reader of the first max_len code points misses it
LONG_DRUG_MESSAGE = (
    "醫生您好，我今年四十五歲，是一名上班族，平常工作壓力很大，經常加班到很晚才回家。"
    "大約從兩個月前開始，我常常在早上起床的時候覺得頭很重，太陽穴兩邊會一陣一陣地抽痛，"
    "有時候還會覺得脖子和肩膀非常僵硬。最近這兩個星期情況變得更嚴重了，下午開會的時候眼睛會發脹，"
    "看電腦螢幕久了會頭暈，晚上也睡不好，常常半夜醒來就再也睡不著。"
    "我之前有高血壓的病史，家裡有血壓計，量起來大概都在一百四十到一百五十之間，比以前高一些。"
    "我父親也有高血壓，十年前還因為中風住院過，所以我很擔心自己也會這樣。"
    "我平常很少運動，飲食比較重口味，喜歡吃滷味和泡麵，咖啡一天要喝三杯左右，"
    "體重這半年也增加了五公斤左右。我試過睡前泡腳和請家人幫忙按摩，但是效果都不太好。"
    "上個禮拜我去家附近的診所看診，醫生幫我量了血壓，也抽血檢查了膽固醇和血糖，說結果還要再追蹤。"
    "請問我現在的狀況需要再去大醫院做更詳細的檢查嗎？"
    "還有，醫生開了阿斯匹靈給我，我現在每天早上吃一顆阿斯匹靈。")
LONG_TEXTS = (
    LONG_DRUG_MESSAGE,                                              # 411: the drug only in the last window
    _P_KNEE + _P_SKIN,                                              # 341: two topics
    "\n\n".join((_P_SLEEP, "😣" * 3, _P_STOMACH, "  \t", _P_KNEE + "🏃‍♀️", _P_SKIN)),  # 736: whitespace, emoji
    LONG_DRUG_MESSAGE + _P_SLEEP + _P_STOMACH + _P_KNEE,              # 964: read whole with 16 windows of 128
    (_P_SLEEP + _P_STOMACH + _P_KNEE + _P_SKIN + LONG_DRUG_MESSAGE) * 2,  # 2,254: past the window bound, truncated
    LONG_DRUG_MESSAGE + "Ж" * 150,                                  # judged; windows not judged do not vote
    "頭痛發燒" * 30 + "😀" * 400,                                    # too little in the vocabulary: not judged
)
# texts that exercise the version-2 contract (docs/bundle.md "Golden vectors")
CONTRACT_TEXTS = (
    "我最近頭痛又發燒，吃了普拿疼還是不舒服",                       # Traditional
    "我最近头痛又发烧，吃了扑热息痛还是不舒服",                     # Simplified
    "血壓１２０／８０ｍｍＨｇ，ＳＧＯＴ偏高",                        # full-width Latin and digits
    "今天跑步後膝蓋很痛😣要冰敷嗎？👍",                            # emoji (outside the BMP)
    "𠮷野家的𩸽魚定食吃完胃痛",                                   # CJK Extension B
    "I have a headache and a fever since yesterday.",          # Latin
    "  血糖\t\t偏高\n\n\r\n需要　　控制\u3000飲食  ",              # whitespace runs, full-width space
    "頭暈\x00\x07\x1b嘔吐\x7f\x85\u200b",                         # control characters, zero-width space
    "喉嚨痛\ud800咳嗽",                                          # a lone surrogate
    "哈哈哈",
    "12345",
    "ЖЖЖ ЩЩЩ ѮѮѮ",                                            # nothing in the vocabulary: not judged
    "頭痛ЖЖЖЖЖЖЖЖ",                                            # under min_coverage known: not judged
    "每天" + "喝水運動睡眠" * 60 + "後來胸口悶痛",                  # over-long: several windows
    *LONG_TEXTS,
)


def golden_vectors(bundle_dir: Path, backend: str, extra_texts: list[str]) -> list[str]:
    """JSON lines {text, codepoints, tokens, truncated, known, probabilities, labels, judged, windows} for the
    contract texts and `extra_texts`; texts with a probability within the tolerance of a threshold are left
    out (a reader's rounding could flip them). `codepoints` is the first window's model row, `tokens` the
    code points read (all windows), `known` summed over the windows (docs/bundle.md "Long texts (windows)")."""
    import kdedge_run
    from kdedge_run.bundle import load_bundle

    clf = kdedge_run.load(bundle_dir, backend=backend)
    bundle = load_bundle(bundle_dir)  # the reader's own input encoding and thresholds
    encoder, thresholds = bundle.preprocessor, np.asarray(bundle.thresholds)
    lines = []
    for text in (*CONTRACT_TEXTS, *extra_texts):
        row, truncated, tokens = encoder.encode([text])
        if tokens[0] == 0:
            continue
        p = clf.predict(text)
        probs = np.array([p.probabilities[lab] for lab in clf.labels])
        if np.abs(probs - thresholds).min() <= GOLDEN_TOLERANCE:
            continue
        read = sum(end - start for start, end in encoder.windows.spans(tokens[0]))  # over the windows
        known = int(round(p.coverage * read))
        lines.append(json.dumps({"text": text, "codepoints": row[0].tolist(), "tokens": tokens[0],
                                 "truncated": truncated[0], "known": known, "probabilities": probs.tolist(),
                                 "labels": p.labels, "judged": p.judged, "windows": p.windows},
                                ensure_ascii=True))
    return lines


def test_metrics(bundle_dir: Path, backend: str, texts: list[str], y: np.ndarray) -> dict:
    """The bundle's scores on held-out labelled texts at its own thresholds (texts it does not judge count
    as predicting no label): micro/macro/weighted-F1, subset accuracy, per-label F1, texts not judged."""
    import kdedge_run

    from kdedge.evaluate import scores

    clf = kdedge_run.load(bundle_dir, backend=backend)
    predictions = clf.predict(texts)
    index = {lab: j for j, lab in enumerate(clf.labels)}
    decided = np.zeros_like(y)
    for i, p in enumerate(predictions):
        for lab in p.labels:
            decided[i, index[lab]] = 1.0
    result = scores(y, decided, clf.labels)
    return {"texts": len(texts), "not_judged": int(sum(not p.judged for p in predictions)),
            "thresholds": "bundle", **result}
