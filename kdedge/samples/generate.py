"""Generate the shipped sample `health_zh_tw.jsonl`: synthetic patient messages in Traditional Chinese.

Written for kdedge from the templates and word lists below (no third-party text), Apache-2.0 like kdedge.
Labels follow healthner9's scheme (which health entity types a message mentions: BODY, DISE, SYMP, CHEM,
DRUG, TREAT, EXAM, INST, SUPP), so a model trained on the sample behaves like the real thing at a small
scale; it is for trying the pipeline, not for measuring it (its texts are template-made and easy).

    python -m kdedge.samples.generate   # rewrites kdedge/samples/health_zh_tw.jsonl (deterministic)
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

OUT = Path(__file__).with_name("health_zh_tw.jsonl")
TEXTS = 3000
SEED = 20261205

WORDS = {
    "BODY": ["胃", "心臟", "膝蓋", "肝", "腎臟", "眼睛", "喉嚨", "肩膀", "腰", "皮膚", "牙齒", "耳朵", "肺", "脖子",
             "手腕", "腳踝", "大腸", "頭", "背", "關節"],
    "DISE": ["糖尿病", "高血壓", "感冒", "胃炎", "氣喘", "痛風", "骨質疏鬆", "憂鬱症", "貧血", "過敏性鼻炎",
             "脂肪肝", "甲狀腺亢進", "中耳炎", "帶狀皰疹", "腸躁症", "關節炎"],
    "SYMP": ["頭痛", "咳嗽", "發燒", "拉肚子", "失眠", "頭暈", "胸悶", "噁心", "疲倦", "便秘", "喉嚨痛", "流鼻水",
             "心悸", "腹脹", "發癢", "耳鳴", "水腫", "食慾不振"],
    "CHEM": ["膽固醇", "鈣", "尿酸", "維生素D", "蛋白質", "鐵", "血糖", "三酸甘油酯", "鈉", "咖啡因", "酒精", "鉀"],
    "DRUG": ["普拿疼", "抗生素", "止痛藥", "阿斯匹靈", "胰島素", "類固醇", "降血壓藥", "安眠藥", "胃藥", "抗組織胺",
             "止咳糖漿", "降血脂藥", "利尿劑", "消炎藥"],
    "TREAT": ["開刀", "復健", "化療", "針灸", "洗腎", "物理治療", "放射治療", "推拿", "打針", "心導管", "減重手術"],
    "EXAM": ["抽血", "超音波", "健檢", "胃鏡", "X光", "心電圖", "大腸鏡", "核磁共振", "驗尿", "骨密度檢查", "電腦斷層"],
    "INST": ["血壓計", "護膝", "血糖機", "輪椅", "助聽器", "拐杖", "製氧機", "護腰", "耳溫槍", "血氧機", "助行器"],
    "SUPP": ["益生菌", "魚油", "葉黃素", "維他命", "膠原蛋白", "綜合維他命", "薑黃", "蔓越莓錠", "酵素", "靈芝"],
}

TEMPLATES = [
    "請問{BODY}一直{SYMP}，需要去做{EXAM}嗎？",
    "我有{DISE}，可以吃{SUPP}嗎？",
    "醫生說我的{CHEM}太高，要吃{DRUG}控制。",
    "{TREAT}之後{BODY}還是會{SYMP}，這樣正常嗎？",
    "家裡買了一台{INST}，每天早上都會量一次。",
    "最近常常{SYMP}，是不是{DISE}？",
    "吃了{DRUG}以後開始{SYMP}，要停藥嗎？",
    "{EXAM}的結果說{CHEM}偏低，要補充{SUPP}嗎？",
    "我爸爸{DISE}很多年了，現在在做{TREAT}。",
    "{BODY}受傷以後一直戴{INST}，多久可以拿掉？",
    "每天早上{SYMP}，晚上又{SYMP2}，好累。",
    "聽說{SUPP}對{BODY}很好，真的嗎？",
    "{DISE}的人可以喝含{CHEM}的飲料嗎？",
    "上個月做了{EXAM}，醫生建議{TREAT}。",
    "媽媽{SYMP}好幾天了，吃{DRUG}也沒有用。",
    "{DRUG}和{SUPP}可以一起吃嗎？",
    "用了{INST}以後{BODY}比較不痛了。",
    "{BODY}痛到睡不著，要看哪一科？",
    "我的{CHEM}一直降不下來，很擔心會變成{DISE}。",
    "做完{TREAT}要注意什麼？會不會{SYMP}？",
]
CLAUSES = [  # one entity each: messages also join two or three of these, so no label hangs on one template
    "醫生開了{DRUG}", "吃{DRUG}會不會傷胃", "{DRUG}一天要吃幾次", "藥局買的{DRUG}",
    "{SYMP}了三天", "一直{SYMP}", "晚上會{SYMP}", "有點{SYMP}",
    "{BODY}很痛", "{BODY}不舒服", "{BODY}腫起來", "右邊的{BODY}會痠",
    "被診斷出{DISE}", "有{DISE}的病史", "家族有{DISE}", "怕得到{DISE}",
    "{CHEM}有點高", "聽說要少吃{CHEM}", "{CHEM}的數字不正常", "要補充{CHEM}",
    "下週要{TREAT}", "做了三次{TREAT}", "{TREAT}很辛苦", "醫生建議{TREAT}",
    "約了{EXAM}", "{EXAM}報告出來了", "明天早上要{EXAM}", "去醫院做{EXAM}",
    "用{INST}量", "借了一個{INST}", "{INST}壞掉了", "需要買{INST}嗎",
    "每天吃{SUPP}", "朋友送我{SUPP}", "{SUPP}有效嗎", "停了{SUPP}",
]
FILLERS = ["今天天氣很冷", "工作很忙常常加班", "最近搬家了", "上個禮拜去旅行", "孩子剛上小學", "晚上都很晚睡",
           "我今年六十五歲", "平常很少運動", "飲食都很清淡", "家人都很擔心"]


def _message(rng: random.Random) -> tuple[str, list[str]]:
    template = rng.choice(TEMPLATES)
    labels = set()

    def fill(match):
        slot = match.group(1).rstrip("2")
        labels.add(slot)
        return rng.choice(WORDS[slot])

    if rng.random() < 0.4:  # two or three clauses joined
        template = "，".join(rng.sample(CLAUSES, rng.randint(2, 3))) + rng.choice(["。", "？", "，怎麼辦？", "。"])
    text = re.sub(r"\{(\w+)\}", fill, template)
    if rng.random() < 0.25:  # context first, as patients write
        text = rng.choice(FILLERS) + "，" + text
    if rng.random() < 0.08:  # a long message: several sentences, the last one names a drug
        extra = [re.sub(r"\{(\w+)\}", fill, rng.choice(TEMPLATES)) for _ in range(rng.randint(5, 9))]
        drug = rng.choice(WORDS["DRUG"])
        labels.add("DRUG")
        text = text + "".join(extra) + f"現在醫生開的是{drug}。"
    return text, sorted(labels)


def generate(n: int = TEXTS, seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        text, labels = _message(rng)
        if text not in seen:
            seen.add(text)
            rows.append({"id": f"s{len(rows):04d}", "text": text, "labels": labels})
    return rows


def main() -> None:
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        for row in generate():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{OUT}: {TEXTS} texts, {OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
